"""Batching by count, by encoded bytes and by interval; ids; the request's shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ingest_client import Kind, Status
from ingest_client._batching import BatchBuilder, Pending, body_size, encode_item
from tests.unit.fakes import Harness, event, idle


def pending(item: dict[str, Any]) -> Pending:
    return Pending(Kind.EVENT, item, encode_item(item), lambda _: None)


def test_measured_size_is_the_size_of_the_body_sent() -> None:
    items: list[dict[str, Any]] = [
        {"_user_id": "a", "_event_type": "x"},
        {"_user_id": "ünïcödé ✓", "_event_type": "y", "_event_parameters": {"n": 1.5}},
        {"_user_id": "c", "_event_type": "z", "_event_parameters": {"list": [1, None, "q"]}},
    ]
    builder = BatchBuilder(Kind.EVENT, 100, 1_048_576)
    for item in items:
        builder.add(pending(item))
        assert builder.size == len(builder.build().body)
    body = builder.build().body
    assert json.loads(body) == items
    assert body_size(0, 0) == len(b"[]")


def test_encoding_is_compact_utf8_and_refuses_what_json_cannot_carry() -> None:
    assert encode_item({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_item({"x": float("nan")})
    with pytest.raises(TypeError):
        encode_item({"x": object()})


async def test_a_batch_goes_out_when_it_reaches_max_batch_items(harness: Harness) -> None:
    client = harness.client(max_batch_items=100)
    for n in range(100):
        await client.track(event(n))
    await idle()
    # Sent by count alone: no time has passed, no flush.
    assert harness.gateway.sizes() == [100]
    await client.track(event(100))
    await idle()
    assert harness.gateway.sizes() == [100]
    await client.flush()
    assert harness.gateway.sizes() == [100, 1]
    await client.aclose()


async def test_count_batches_of_250_events(harness: Harness) -> None:
    client = harness.client(max_batch_items=100)
    for n in range(250):
        await client.track(event(n))
    await client.flush()
    assert harness.gateway.sizes() == [100, 100, 50]
    sent = [item["_user_id"] for s in harness.gateway.requests for item in s.body]
    assert sorted(sent) == sorted(f"user-{n}" for n in range(250))
    await client.aclose()


async def test_a_batch_goes_out_before_one_more_item_would_pass_max_batch_bytes(
    harness: Harness,
) -> None:
    items = [event(n, _event_id=f"id-{n:04d}") for n in range(7)]
    size = len(encode_item(items[0]))
    assert all(len(encode_item(i)) == size for i in items)
    limit = body_size(3 * size, 3)  # exactly three items fit
    client = harness.client(max_batch_bytes=limit)
    for item in items:
        await client.track(item)
    await idle()
    # Two full batches went out by size alone, before any interval or flush.
    assert harness.gateway.sizes() == [3, 3]
    await client.flush()
    assert harness.gateway.sizes() == [3, 3, 1]
    assert max(len(s.raw) for s in harness.gateway.requests) == limit
    await client.aclose()


async def test_one_byte_less_and_only_two_fit(harness: Harness) -> None:
    items = [event(n, _event_id=f"id-{n:04d}") for n in range(4)]
    size = len(encode_item(items[0]))
    client = harness.client(max_batch_bytes=body_size(3 * size, 3) - 1)
    for item in items:
        await client.track(item)
    await client.flush()
    assert harness.gateway.sizes() == [2, 2]
    await client.aclose()


async def test_an_item_too_large_alone_is_rejected_and_never_sent(harness: Harness) -> None:
    client = harness.client(max_batch_bytes=200)
    big = await client.track(event(1, _event_parameters={"blob": "x" * 300}))
    small = await client.track(event(2))
    outcome = await big
    assert outcome.status is Status.REJECTED
    assert outcome.errors == {"_item": ["Too large"]}
    assert outcome.http_status is None
    assert outcome.attempts == 0
    await client.flush()
    assert (await small).status is Status.ACCEPTED
    assert harness.gateway.sizes() == [1]
    assert harness.gateway.requests[0].body[0]["_user_id"] == "user-2"
    stats = client.stats()
    assert (stats.enqueued, stats.rejected, stats.accepted) == (2, 1, 1)
    await client.aclose()


async def test_a_partial_batch_goes_out_flush_interval_after_its_first_item(
    harness: Harness,
) -> None:
    client = harness.client(flush_interval=1.0)
    await client.track(event(1))
    await harness.clock.advance(0.5)
    await client.track(event(2))
    await harness.clock.advance(0.499)
    assert harness.gateway.requests == []
    await harness.clock.advance(0.001)
    # Counted from the first item, not the last one.
    assert harness.gateway.sizes() == [2]
    assert harness.gateway.requests[0].at == pytest.approx(1.0)
    # The next batch has its own interval.
    await client.track(event(3))
    await harness.clock.advance(0.999)
    assert harness.gateway.sizes() == [2]
    await harness.clock.advance(0.001)
    assert harness.gateway.sizes() == [2, 1]
    await client.aclose()


async def test_contact_writes_also_go_out_on_the_interval(harness: Harness) -> None:
    client = harness.client(flush_interval=2.0)
    await client.upsert({"_user_id": "u1", "plan": "a"})
    await harness.clock.advance(1.9)
    assert harness.gateway.requests == []
    await harness.clock.advance(0.1)
    assert harness.gateway.paths() == ["POST contacts"]
    await client.aclose()


async def test_events_and_contacts_are_batched_separately(harness: Harness) -> None:
    client = harness.client()
    await client.track(event(1))
    await client.upsert({"_user_id": "u1"})
    await client.track(event(2))
    await client.flush()
    assert sorted(harness.gateway.paths()) == ["POST contacts", "POST events"]
    assert sorted(harness.gateway.sizes()) == [1, 2]
    await client.aclose()


async def test_track_generates_uuid7_ids_and_keeps_the_callers(harness: Harness) -> None:
    client = harness.client()
    mine = await client.track(event(1, _event_id="caller-id-1"))
    generated = await client.track(event(2))
    await client.flush()
    assert (await mine).item["_event_id"] == "caller-id-1"
    new_id = (await generated).item["_event_id"]
    assert new_id[14] == "7"
    assert [i["_event_id"] for i in harness.gateway.requests[0].body] == ["caller-id-1", new_id]
    await client.aclose()


async def test_the_item_is_copied_at_enqueue(harness: Harness) -> None:
    client = harness.client()
    mine = {"_user_id": "u1", "_event_type": "x"}
    handle = await client.track(mine)
    mine["_user_id"] = "changed later"
    await client.flush()
    assert "_event_id" not in mine  # the caller's dict is left alone
    assert harness.gateway.requests[0].body[0]["_user_id"] == "u1"
    assert (await handle).item["_user_id"] == "u1"
    await client.aclose()


async def test_request_shape_auth_gzip_and_sync(harness: Harness) -> None:
    client = harness.client(gzip=True, sync=True, project="proj-1", datasource="ds_2")
    handle = await client.track(event(1))
    await client.flush()
    seen = harness.gateway.requests[0]
    assert seen.method == "POST"
    assert seen.path == "/v1/project/proj-1/datasource/ds_2/stream/events"
    assert seen.query == "_sync"
    assert seen.headers["authorization"] == "Bearer ingk_test"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-encoding"] == "gzip"
    assert seen.body[0]["_user_id"] == "user-1"
    outcome = await handle
    assert outcome.status is Status.ACCEPTED
    assert outcome.committed is True
    assert outcome.http_status == 200
    await client.aclose()


async def test_without_sync_nothing_is_committed(harness: Harness) -> None:
    client = harness.client()
    handle = await client.track(event(1))
    await client.flush()
    assert harness.gateway.requests[0].query == ""
    assert "content-encoding" not in harness.gateway.requests[0].headers
    outcome = await handle
    assert (outcome.status, outcome.committed, outcome.http_status) == (
        Status.ACCEPTED,
        False,
        202,
    )
    await client.aclose()


async def test_flush_waits_for_every_outcome_enqueued_before_it(harness: Harness) -> None:
    client = harness.client()
    harness.gateway.gate.close()
    handles = [await client.track(event(n)) for n in range(3)]
    flushing = asyncio.ensure_future(client.flush())
    await idle()
    assert not flushing.done()
    assert not any(h.done() for h in handles)
    harness.gateway.gate.open()
    await flushing
    assert all(h.done() for h in handles)
    await client.aclose()
