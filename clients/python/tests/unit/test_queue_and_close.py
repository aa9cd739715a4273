"""The bounded queue (block, drop), close() and what it reports, the counters."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from ingest_client import Status
from ingest_client._outcomes import Stats
from tests.unit.fakes import Harness, Reply, Seen, event, idle


def balanced(stats: Stats) -> bool:
    done = stats.accepted + stats.rejected + stats.failed + stats.dropped
    return stats.enqueued == done + stats.queued


async def test_overflow_drop_reports_the_new_item_dropped_at_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    client = harness.client(max_queue_items=2, overflow="drop")
    harness.gateway.gate.close()
    kept = [await client.track(event(n)) for n in range(2)]
    with caplog.at_level(logging.WARNING, logger="ingest_client"):
        dropped = await client.track(event(2))
    assert dropped.done()
    outcome = dropped.result()
    assert outcome.status is Status.DROPPED
    assert outcome.message == "queue full"
    assert outcome.item["_user_id"] == "user-2"
    assert harness.outcomes == [outcome]  # on_delivery heard of it too
    assert [r.getMessage() for r in caplog.records] == ["dropped event: queue full"]
    stats = client.stats()
    assert (stats.enqueued, stats.dropped, stats.queued) == (3, 1, 2)
    assert balanced(stats)
    harness.gateway.gate.open()
    await client.flush()
    assert [(await h).status for h in kept] == [Status.ACCEPTED] * 2
    # Room again once outcomes are final.
    again = await client.track(event(3))
    await client.flush()
    assert (await again).status is Status.ACCEPTED
    await client.aclose()


async def test_overflow_block_waits_for_room(harness: Harness) -> None:
    client = harness.client(max_queue_items=2, max_batch_items=1)
    harness.gateway.gate.close()
    kept = [await client.track(event(n)) for n in range(2)]
    waiting = asyncio.ensure_future(client.track(event(2)))
    await idle()
    assert not waiting.done()
    assert client.stats().queued == 2
    harness.gateway.gate.release()  # one outcome: one place
    await idle()
    assert waiting.done()
    harness.gateway.gate.open()
    third = await waiting
    await client.flush()
    assert [(await h).status for h in [*kept, third]] == [Status.ACCEPTED] * 3
    assert client.stats().dropped == 0
    await client.aclose()


async def test_close_while_blocked_drops_the_waiting_item(harness: Harness) -> None:
    client = harness.client(max_queue_items=1)
    harness.gateway.gate.close()
    first = await client.track(event(0))
    waiting = asyncio.ensure_future(client.track(event(1)))
    await idle()
    closing = asyncio.ensure_future(client.aclose(timeout=5))
    await idle()
    handle = await waiting
    assert (await handle).status is Status.DROPPED
    assert (await handle).message == "client closed"
    harness.gateway.gate.open()
    await closing
    assert (await first).status is Status.ACCEPTED


async def test_close_delivers_everything_queued(harness: Harness) -> None:
    client = harness.client(max_batch_items=100)
    handles = [await client.track(event(n)) for n in range(250)]
    handles += [await client.upsert({"_user_id": f"u{n}"}) for n in range(5)]
    await client.aclose()
    assert [(await h).status for h in handles] == [Status.ACCEPTED] * 255
    assert sorted(harness.gateway.sizes()) == [5, 50, 100, 100]
    stats = client.stats()
    assert (stats.accepted, stats.queued, stats.failed) == (255, 0, 0)


async def test_close_timeout_reports_the_rest_failed(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(
        503, headers={"Retry-After": "1"}, json={"message": "down"}
    )
    client = harness.client(max_batch_items=2)
    sent = [await client.track(event(n)) for n in range(2)]  # full: out at once, retried
    await client.upsert({"_user_id": "u1"})  # out at once on close, retried
    never = await client.delete("u2")
    with caplog.at_level(logging.ERROR, logger="ingest_client"):
        closing = asyncio.ensure_future(client.aclose(timeout=3.0))
        await harness.clock.advance(2.999)
        assert not closing.done()
        await harness.clock.advance(0.001)
        assert closing.done()
        await closing
    for handle in sent:
        outcome = await handle
        assert outcome.status is Status.FAILED
        assert outcome.message == "closed before delivery"
        assert outcome.http_status == 503
        assert outcome.attempts >= 2
    # Behind the contact batch being retried, the delete never went out.
    outcome = await never
    assert (outcome.status, outcome.message, outcome.attempts, outcome.http_status) == (
        Status.FAILED,
        "closed before delivery",
        0,
        None,
    )
    assert not any(s.method == "DELETE" for s in harness.gateway.requests)
    stats = client.stats()
    assert (stats.failed, stats.queued) == (4, 0)
    assert balanced(stats)
    assert any("not delivered in time" in r.getMessage() for r in caplog.records)


async def test_after_close_items_are_dropped_and_flush_returns(harness: Harness) -> None:
    client = harness.client()
    await client.aclose()
    handle = await client.track(event(1))
    outcome = await handle
    assert (outcome.status, outcome.message) == (Status.DROPPED, "client closed")
    await client.flush()
    await client.aclose()  # twice is fine
    assert harness.gateway.requests == []
    assert client.stats().dropped == 1


async def test_async_context_manager_closes(harness: Harness) -> None:
    async with harness.client() as client:
        handle = await client.track(event(1))
    assert (await handle).status is Status.ACCEPTED


async def test_counters(harness: Harness) -> None:
    def respond(seen: Seen, number: int) -> Reply:
        if number == 0:
            return httpx.Response(500, json={"message": "oops"})
        return httpx.Response(400, json={"message": "bad"})

    harness.gateway.responder = respond
    client = harness.client(max_queue_items=3, overflow="drop", max_batch_items=3)
    harness.gateway.gate.close()
    for n in range(4):
        await client.track(event(n))
    harness.gateway.gate.open()
    await client.flush()
    stats = client.stats()
    assert stats == Stats(
        enqueued=4, sent=6, accepted=0, rejected=3, failed=0, dropped=1, retries=1, requests=2
    )
    assert balanced(stats)
    await client.aclose()
