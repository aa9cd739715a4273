"""The AsyncClient against the real gateway, Kafka, worker and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from ingest_client import AsyncClient, Outcome, Status
from tests.integration.conftest import Tenant, wait_until


@dataclass
class Exchange:
    started: float  # Unix time the request started
    answered: float  # and was answered
    status: int
    headers: httpx.Headers


class Recording(httpx.AsyncBaseTransport):
    """The real transport, remembering when each request started and how it was answered."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.time()
        response = await self._inner.handle_async_request(request)
        self.exchanges.append(
            Exchange(started, time.time(), response.status_code, response.headers)
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def outcomes_of(handles: list[asyncio.Future[Outcome]]) -> list[Outcome]:
    return list(await asyncio.gather(*handles))


def copies(tenant: Tenant) -> dict[str, int]:
    return {e["event_id"]: e["copies"] for e in tenant.events()}


async def test_partial_failures_surface_per_item(tenant: Tenant) -> None:
    async with AsyncClient(**tenant.options(sync=True)) as client:
        good = await client.track({"_user_id": "ann", "_event_type": "login"})
        no_type = await client.track({"_user_id": "ann"})
        bad_date = await client.track(
            {"_user_id": "ann", "_event_type": "login", "_event_date": "yesterday"}
        )
        bad_phone = await client.upsert({"_user_id": "bob", "_phone_mobile": "12"})
        await client.flush()
        assert (await good).status is Status.ACCEPTED
        assert (await good).committed is True
        for handle, errors in (
            (no_type, {"_event_type": ["Required"]}),
            (bad_date, {"_event_date": ["Invalid format"]}),
        ):
            outcome = await handle
            assert outcome.status is Status.REJECTED
            assert outcome.errors == errors
            assert outcome.http_status == 200
        # Every item of that request was refused: a 422 with the server's field errors.
        contact = await bad_phone
        assert (contact.status, contact.http_status) == (Status.REJECTED, 422)
        assert contact.errors == {"_phone_mobile": ["Invalid format"]}
    assert copies(tenant) == {(await good).item["_event_id"]: 1}
    assert tenant.contacts() == {}


async def test_a_429_is_waited_out_using_the_headers(tenant: Tenant) -> None:
    tenant.set_limit("events", 2)
    # Three batches at once must land in one rate-limit window: not in its last moments.
    reset = tenant.rate_limit_reset()
    if reset - time.time() < 3:
        await asyncio.sleep(reset - time.time() + 0.2)
    recording = Recording()
    client = AsyncClient(**tenant.options(max_batch_items=10, transport=recording))
    began = time.time()
    handles = [await client.track({"_user_id": f"u{n}", "_event_type": "x"}) for n in range(30)]
    await client.flush()
    await client.aclose()

    outcomes = await outcomes_of(handles)
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 30
    stats = client.stats()
    assert stats.retries >= 1
    assert (stats.failed, stats.rejected) == (0, 0)
    limited = [e for e in recording.exchanges if e.status == 429]
    assert limited, "the third batch in the window must have met the limit"
    first = limited[0]
    window_end = float(first.headers["x-ratelimit-reset"])
    after = [e for e in recording.exchanges if e.started > first.answered]
    assert after
    # Once the 429 was in, no request to the endpoint started before the window it named
    # was over (the whole endpoint paused, not only that batch).
    assert all(e.started >= window_end - 0.05 for e in after), (window_end, after)
    assert time.time() - began >= window_end - first.answered - 0.5


async def test_close_delivers_everything_queued(tenant: Tenant) -> None:
    client = AsyncClient(**tenant.options(flush_interval=5.0, gzip=True))
    events = [
        await client.track({"_user_id": f"u{n % 50}", "_event_type": "view"}) for n in range(1000)
    ]
    contacts = [await client.upsert({"_user_id": f"c{n}", "n": n}) for n in range(50)]
    deleted = await client.delete("c0")
    await client.aclose()

    outcomes = await outcomes_of([*events, *contacts, deleted])
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 1051
    assert client.stats().queued == 0
    ids = {o.item["_event_id"] for o in outcomes[:1000]}
    stored = wait_until(lambda: copies(tenant), lambda c: len(c) >= 1000)
    assert set(stored) == ids
    assert set(stored.values()) == {1}
    expected = {f"c{n}": {"n": n} for n in range(1, 50)}
    assert wait_until(tenant.contacts, lambda c: c == expected) == expected


async def test_flush_returns_with_every_outcome_and_a_refused_token_is_not_retried(
    tenant: Tenant,
) -> None:
    async with AsyncClient(**tenant.options(token="ingk_" + "0" * 64)) as client:
        handles = [await client.track({"_user_id": "u", "_event_type": "x"}) for _ in range(3)]
        await client.flush()
        assert all(h.done() for h in handles)
        for outcome in await outcomes_of(handles):
            assert outcome.status is Status.REJECTED
            assert outcome.http_status == 401
            assert outcome.errors == {"_request": ["unknown token"]}
        assert client.stats().requests == 1
