"""Answers into outcomes, retries, the wait headers, the deadline, the endpoint pause."""

from __future__ import annotations

import itertools
import logging

import httpx
import pytest

from ingest_client import Status
from tests.unit.fakes import Harness, Reply, Responder, Seen, batch_answer, event, idle, ok


def status_then_ok(*statuses: int, headers: dict[str, str] | None = None) -> Responder:
    def respond(seen: Seen, number: int) -> Reply:
        if number < len(statuses):
            return httpx.Response(statuses[number], headers=headers, json={"message": "busy"})
        return ok(seen, number)

    return respond


async def test_partial_success_is_reported_per_item(harness: Harness) -> None:
    def respond(seen: Seen, number: int) -> Reply:
        answer = batch_answer(
            seen, {1: {"_email": ["Invalid format"]}, 2: {"_user_id": ["Required"]}}
        )
        return httpx.Response(202, json=answer)

    harness.gateway.responder = respond
    client = harness.client()
    good = await client.upsert({"_user_id": "u1"})
    bad_email = await client.upsert({"_user_id": "u2", "_email": "nope"})
    no_user = await client.upsert({"_email": "a@b.co"})
    await client.flush()
    assert (await good).status is Status.ACCEPTED
    for handle, errors in (
        (bad_email, {"_email": ["Invalid format"]}),
        (no_user, {"_user_id": ["Required"]}),
    ):
        outcome = await handle
        assert outcome.status is Status.REJECTED
        assert outcome.errors == errors
        assert outcome.http_status == 202
        assert outcome.attempts == 1
    stats = client.stats()
    assert (stats.accepted, stats.rejected, stats.retries) == (1, 2, 0)
    await client.aclose()


async def test_a_422_rejects_every_item_with_its_errors(harness: Harness) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(
        422,
        json=batch_answer(seen, {0: {"_event_type": ["Required"]}, 1: {"_user_id": ["Too long"]}}),
    )
    client = harness.client()
    handles = [await client.track({"_user_id": "a"}), await client.track(event(2))]
    await client.flush()
    outcomes = [await h for h in handles]
    assert [o.status for o in outcomes] == [Status.REJECTED, Status.REJECTED]
    assert outcomes[0].errors == {"_event_type": ["Required"]}
    assert outcomes[1].errors == {"_user_id": ["Too long"]}
    assert len(harness.gateway.requests) == 1
    await client.aclose()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 409])
async def test_a_refused_request_is_never_retried_and_rejects_every_item(
    harness: Harness, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(status, json={"message": "nope"})
    client = harness.client()
    handles = [await client.track(event(n)) for n in range(3)]
    with caplog.at_level(logging.ERROR, logger="ingest_client"):
        await client.flush()
    for handle in handles:
        outcome = await handle
        assert outcome.status is Status.REJECTED
        assert outcome.errors == {"_request": ["nope"]}
        assert outcome.http_status == status
        assert outcome.attempts == 1
    assert len(harness.gateway.requests) == 1
    assert client.stats().retries == 0
    # One line for the whole request, not one per item.
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert str(status) in refused[0].getMessage()
    await client.aclose()


async def test_a_refusal_without_a_json_message_quotes_the_status(harness: Harness) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(415, text="Expected JSON")
    client = harness.client()
    handle = await client.track(event(1))
    await client.flush()
    assert (await handle).errors == {"_request": ["HTTP 415 Unsupported Media Type"]}
    await client.aclose()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retriable_statuses_are_retried_with_the_same_body(
    harness: Harness, status: int
) -> None:
    harness.gateway.responder = status_then_ok(status, status)
    client = harness.client()
    handles = [await client.track(event(n)) for n in range(3)]
    await client.flush()
    first, second, third = harness.gateway.requests
    assert first.raw == second.raw == third.raw  # same event ids every time
    for handle in handles:
        outcome = await handle
        assert outcome.status is Status.ACCEPTED
        assert outcome.attempts == 3
    stats = client.stats()
    assert (stats.requests, stats.retries, stats.sent, stats.accepted) == (3, 2, 9, 3)
    await client.aclose()


async def test_network_errors_are_retried(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def respond(seen: Seen, number: int) -> Reply:
        if number == 0:
            return httpx.ConnectError("connection refused")
        if number == 1:
            return httpx.ReadTimeout("timed out")
        return ok(seen, number)

    harness.gateway.responder = respond
    client = harness.client()
    handle = await client.track(event(1))
    with caplog.at_level(logging.INFO, logger="ingest_client"):
        await client.flush()
    outcome = await handle
    assert (outcome.status, outcome.attempts) == (Status.ACCEPTED, 3)
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert len(retries) == 2
    assert "ConnectError" in retries[0].getMessage()
    assert "ReadTimeout" in retries[1].getMessage()
    await client.aclose()


async def test_backoff_grows_within_full_jitter_bounds(harness: Harness) -> None:
    harness.gateway.responder = status_then_ok(500, 500, 500, 500)
    client = harness.client(
        random=lambda: 0.999_999, retry_initial_backoff=1.0, retry_max_backoff=5.0
    )
    handle = await client.track(event(1))
    await harness.clock.advance(1.0)  # the interval sends it
    await harness.clock.advance(60)
    assert (await handle).status is Status.ACCEPTED
    times = [s.at for s in harness.gateway.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0, 5.0], abs=1e-3)
    await client.aclose()


async def test_retry_after_is_honoured(harness: Harness) -> None:
    harness.gateway.responder = status_then_ok(503, headers={"Retry-After": "5"})
    client = harness.client()
    handle = await client.track(event(1))
    await harness.clock.advance(1.0)
    assert len(harness.gateway.requests) == 1
    await harness.clock.advance(4.999)
    assert len(harness.gateway.requests) == 1
    await harness.clock.advance(0.001)
    assert len(harness.gateway.requests) == 2
    assert (await handle).attempts == 2
    await client.aclose()


async def test_a_429_waits_until_the_rate_limit_resets(harness: Harness) -> None:
    reset = int(harness.clock.time()) + 20
    harness.gateway.responder = status_then_ok(
        429, headers={"Retry-After": "3", "X-RateLimit-Reset": str(reset)}
    )
    client = harness.client()
    handle = await client.track(event(1))
    await harness.clock.advance(1.0)
    await harness.clock.advance(60)
    assert (await handle).status is Status.ACCEPTED
    # Answered at t=1 (wall start + 1); Retry-After says 3 s, the reset is at wall start + 20:
    # the later one wins.
    retry = harness.gateway.requests[1]
    assert retry.at == pytest.approx(20.0)
    await client.aclose()


async def test_a_429_pauses_the_whole_endpoint(harness: Harness) -> None:
    def respond(seen: Seen, number: int) -> Reply:
        if number == 0:
            return httpx.Response(429, headers={"Retry-After": "10"})
        return ok(seen, number)

    harness.gateway.responder = respond
    client = harness.client(max_batch_items=2, max_in_flight=4)
    first = [await client.track(event(n)) for n in range(2)]  # full: sent at t=0, gets the 429
    await idle()
    await harness.clock.advance(1.0)
    later = [await client.track(event(n)) for n in range(2, 4)]  # another events batch
    contact = await client.upsert({"_user_id": "u1"})  # another endpoint
    await harness.clock.advance(1.0)
    # The contacts endpoint is not paused; the events endpoint is.
    assert harness.gateway.paths() == ["POST events", "POST contacts"]
    assert contact.done()
    await harness.clock.advance(7.5)  # t = 9.5
    assert len(harness.gateway.requests) == 2
    await harness.clock.advance(0.5)  # t = 10: the Retry-After is over
    assert harness.gateway.paths() == ["POST events", "POST contacts", "POST events", "POST events"]
    assert all(s.at >= 10.0 for s in harness.gateway.requests[2:])
    for handle in first + later:
        assert (await handle).status is Status.ACCEPTED
    await client.aclose()


async def test_the_retry_deadline_gives_a_batch_up(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(503, json={"message": "broker down"})
    client = harness.client(
        random=lambda: 0.999_999,
        retry_initial_backoff=1.0,
        retry_max_backoff=4.0,
        retry_deadline=10.0,
    )
    handles = [await client.track(event(n)) for n in range(2)]
    with caplog.at_level(logging.ERROR, logger="ingest_client"):
        await harness.clock.advance(1.0)  # first attempt at t=1
        await harness.clock.advance(100)
    # Attempts at 1, 2, 4, 8; the next sleep (4 s) would end at 12, past 1 + 10.
    assert [s.at for s in harness.gateway.requests] == pytest.approx([1, 2, 4, 8], abs=1e-3)
    for handle in handles:
        outcome = await handle
        assert outcome.status is Status.FAILED
        assert outcome.http_status == 503
        assert outcome.attempts == 4
        assert outcome.message is not None
        assert "broker down" in outcome.message
    assert client.stats().failed == 2
    assert len([r for r in caplog.records if r.getMessage().startswith("giving up")]) == 1
    await client.aclose()


async def test_a_server_wait_past_the_deadline_gives_up_at_once(harness: Harness) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(429, headers={"Retry-After": "300"})
    client = harness.client(retry_deadline=120.0)
    handle = await client.track(event(1))
    await client.flush()
    outcome = await handle
    assert (outcome.status, outcome.attempts, outcome.http_status) == (Status.FAILED, 1, 429)
    await client.aclose()


async def test_an_unreadable_answer_fails_the_items(harness: Harness) -> None:
    harness.gateway.responder = lambda seen, n: httpx.Response(202, json={"entity": {"items": []}})
    client = harness.client()
    handle = await client.track(event(1))
    await client.flush()
    outcome = await handle
    assert outcome.status is Status.FAILED
    assert outcome.http_status == 202
    assert outcome.message is not None
    assert "unreadable" in outcome.message
    await client.aclose()


async def test_on_delivery_gets_every_outcome_and_its_errors_are_contained(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def callback(outcome: object) -> None:
        seen.append(str(getattr(outcome, "status", "")))
        raise RuntimeError("callback bug")

    client = harness.client(on_delivery=callback)
    handles = [await client.track(event(n)) for n in range(3)]
    with caplog.at_level(logging.ERROR, logger="ingest_client"):
        await client.flush()
    assert seen == ["accepted"] * 3
    assert [(await h).status for h in handles] == [Status.ACCEPTED] * 3
    assert len([r for r in caplog.records if "on_delivery" in r.getMessage()]) == 3
    await client.aclose()
