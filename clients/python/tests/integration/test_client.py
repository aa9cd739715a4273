"""The thread-based Client against the real gateway, Kafka, worker and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from typing import Any

from ingest_client import Client, Kind, Outcome, Status
from tests.integration.conftest import Tenant, wait_until


def results(handles: list[concurrent.futures.Future[Outcome]]) -> list[Outcome]:
    return [h.result(timeout=0) for h in handles]


def copies(tenant: Tenant) -> dict[str, int]:
    return {e["event_id"]: e["copies"] for e in tenant.events()}


def test_partial_failures_surface_per_item(tenant: Tenant) -> None:
    with Client(**tenant.options(sync=True)) as client:
        good = client.upsert({"_user_id": "ann", "_email": "ann@example.com", "plan": "pro"})
        bad_email = client.upsert({"_user_id": "bob", "_email": "not-an-address"})
        no_user = client.upsert({"_email": "cy@example.com"})
        event_ok = client.track({"_user_id": "ann", "_event_type": "signed_up"})
        event_bad = client.track({"_event_type": "signed_up"})
        client.flush()

        assert good.result().status is Status.ACCEPTED
        assert event_ok.result().status is Status.ACCEPTED
        for handle, errors in (
            (bad_email, {"_email": ["Invalid format"]}),
            (no_user, {"_user_id": ["Required"]}),
            (event_bad, {"_user_id": ["Required"]}),
        ):
            outcome = handle.result()
            assert outcome.status is Status.REJECTED, outcome
            assert outcome.errors == errors
            assert outcome.http_status == 200  # the batch was answered; this item refused
            assert outcome.attempts == 1
        stats = client.stats()
        assert (stats.accepted, stats.rejected, stats.failed, stats.retries) == (2, 3, 0, 0)

    # Committed under sync: stored by the time the answer came.
    assert tenant.contacts() == {"ann": {"_email": "ann@example.com", "plan": "pro"}}
    assert copies(tenant) == {event_ok.result().item["_event_id"]: 1}


def test_sync_gives_committed(tenant: Tenant) -> None:
    with Client(**tenant.options(sync=True)) as client:
        events = [client.track({"_user_id": f"u{n}", "_event_type": "paid"}) for n in range(5)]
        contact = client.upsert({"_user_id": "u1", "tier": 2})
        client.flush()
    for outcome in [*results(events), contact.result()]:
        assert outcome.status is Status.ACCEPTED
        assert outcome.committed is True
        assert outcome.http_status == 200
    # No polling: committed means in PostgreSQL.
    assert copies(tenant) == {o.item["_event_id"]: 1 for o in results(events)}
    assert tenant.contacts() == {"u1": {"tier": 2}}


def test_deletes_are_ordered_after_upserts(tenant: Tenant) -> None:
    with Client(**tenant.options(sync=True, flush_interval=0.05)) as client:
        handles = [
            client.upsert({"_user_id": "dana", "plan": "a", "seats": 3}),
            client.upsert({"_user_id": "eve", "plan": "a"}),
            client.delete("dana"),
            client.upsert({"_user_id": "dana", "plan": "c"}),
        ]
        client.flush()
    outcomes = results(handles)
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 4
    assert outcomes[2].kind is Kind.DELETE
    # The delete applied between the two upserts: "seats" is gone, "plan" is the last one.
    # (Out of order, dana would be absent, or keep seats=3.)
    assert tenant.contacts() == {"dana": {"plan": "c"}, "eve": {"plan": "a"}}


def test_a_broker_outage_is_retried_with_nothing_lost_or_doubled(tenant: Tenant) -> None:
    client = Client(
        **tenant.options(
            max_batch_items=10,
            flush_interval=0.1,
            retry_initial_backoff=0.2,
            retry_max_backoff=1.0,
        )
    )
    handles: list[concurrent.futures.Future[Outcome]] = []
    tenant.kafka("stop")
    try:
        handles = [client.track({"_user_id": f"u{n % 7}", "_event_type": "x"}) for n in range(35)]
        # The gateway answers 503 after its 1 s publish timeout; the client retries.
        stats = wait_until(client.stats, lambda s: s.retries >= 1, timeout=30)
        assert stats.retries >= 1, stats
        assert stats.accepted == 0, stats
    finally:
        tenant.kafka("start")
    client.flush()
    client.close()

    outcomes = results(handles)
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 35, outcomes
    assert max(o.attempts for o in outcomes) >= 2
    stats = client.stats()
    assert (stats.failed, stats.rejected, stats.queued) == (0, 0, 0)
    ids = {o.item["_event_id"] for o in outcomes}
    stored = wait_until(lambda: copies(tenant), lambda c: len(c) >= 35)
    assert set(stored) == ids
    assert set(stored.values()) == {1}, "every event stored exactly once"


def test_close_delivers_everything_queued(tenant: Tenant) -> None:
    client = Client(**tenant.options(flush_interval=5.0))
    events = [client.track({"_user_id": f"u{n % 50}", "_event_type": "view"}) for n in range(1000)]
    contacts = [client.upsert({"_user_id": f"u{n}", "n": n}) for n in range(100)]
    client.close()  # no flush() first: close() sends what is queued

    assert [o.status for o in results(events + contacts)] == [Status.ACCEPTED] * 1100
    stats = client.stats()
    assert (stats.enqueued, stats.accepted, stats.queued) == (1100, 1100, 0)
    ids = {o.item["_event_id"] for o in results(events)}
    stored = wait_until(lambda: copies(tenant), lambda c: len(c) >= 1000)
    assert set(stored) == ids
    assert set(stored.values()) == {1}
    expected: dict[str, dict[str, Any]] = {f"u{n}": {"n": n} for n in range(100)}
    assert wait_until(tenant.contacts, lambda c: len(c) >= 100) == expected
