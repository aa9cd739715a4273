"""Contact writes one request at a time, in order; events up to max_in_flight at once."""

from __future__ import annotations

import httpx

from ingest_client import Kind, Status
from tests.unit.fakes import Harness, Reply, Seen, event, idle, ok


async def test_contact_writes_go_one_request_at_a_time_in_order(harness: Harness) -> None:
    client = harness.client()
    gateway = harness.gateway
    gateway.gate.close()
    await client.upsert({"_user_id": "u1", "plan": "a"})
    await client.upsert({"_user_id": "u2", "plan": "a"})
    deleted = await client.delete("u1")
    await client.upsert({"_user_id": "u1", "plan": "c"})
    await client.upsert({"_user_id": "u3"})
    await harness.clock.advance(1.0)
    # The first batch is out and unanswered: nothing else may start.
    assert gateway.paths() == ["POST contacts"]
    assert gateway.max_in_flight == 1
    for expected in (2, 3):
        gateway.gate.release()  # answer the request in flight: the next one starts
        await idle()
        assert len(gateway.requests) == expected
        assert gateway.in_flight == 1
    gateway.gate.open()
    await client.flush()
    assert gateway.paths() == ["POST contacts", "DELETE contacts/u1", "POST contacts"]
    assert [[i["_user_id"] for i in s.body] for s in gateway.requests if s.method == "POST"] == [
        ["u1", "u2"],
        ["u1", "u3"],
    ]
    assert gateway.requests[0].body[0]["plan"] == "a"
    assert gateway.requests[2].body[0]["plan"] == "c"
    assert gateway.max_in_flight == 1
    outcome = await deleted
    assert (outcome.status, outcome.kind, outcome.item) == (
        Status.ACCEPTED,
        Kind.DELETE,
        {"_user_id": "u1"},
    )
    await client.aclose()


async def test_a_batch_being_retried_holds_back_the_writes_after_it(harness: Harness) -> None:
    def respond(seen: Seen, number: int) -> Reply:
        if number < 2:
            return httpx.Response(503, headers={"Retry-After": "2"}, json={"message": "down"})
        return ok(seen, number)

    harness.gateway.responder = respond
    client = harness.client()
    await client.upsert({"_user_id": "u1", "plan": "a"})
    await client.delete("u1")
    await client.upsert({"_user_id": "u1", "plan": "c"})
    # The first upsert went out alone at t=0 (the delete closed its batch); it is answered
    # 503 at t=0 and t=2. Until it succeeds at t=4, nothing after it starts.
    await harness.clock.advance(3.5)
    assert harness.gateway.paths() == ["POST contacts", "POST contacts"]
    await harness.clock.advance(0.5)
    await client.flush()
    assert harness.gateway.paths() == [
        "POST contacts",
        "POST contacts",
        "POST contacts",
        "DELETE contacts/u1",
        "POST contacts",
    ]
    assert [s.at for s in harness.gateway.requests] == [0.0, 2.0, 4.0, 4.0, 4.0]
    assert harness.gateway.requests[0].body == [{"_user_id": "u1", "plan": "a"}]
    await client.aclose()


async def test_deletes_are_percent_encoded_and_sent_without_a_body(harness: Harness) -> None:
    client = harness.client(sync=True, gzip=True)
    handle = await client.delete("a/b c?d%é")
    await client.flush()
    seen = harness.gateway.requests[0]
    assert seen.method == "DELETE"
    assert seen.path.endswith("/stream/contacts/a%2Fb%20c%3Fd%25%C3%A9")
    # ?_sync is a POST flag: a contact delete is never `committed`.
    assert seen.query == ""
    assert seen.raw == b""
    assert "content-encoding" not in seen.headers
    outcome = await handle
    assert outcome.status is Status.ACCEPTED
    assert outcome.committed is False
    await client.aclose()


async def test_a_delete_refused_by_the_server(harness: Harness) -> None:
    def respond(seen: Seen, number: int) -> Reply:
        answer = {
            "entity": {
                "successful": 0,
                "failed": 1,
                "items": [
                    {
                        "status": "error",
                        "_user_id": None,
                        "errors": {"_user_id": ["Invalid format"]},
                    }
                ],
            }
        }
        return httpx.Response(422, json=answer)

    harness.gateway.responder = respond
    client = harness.client()
    handle = await client.delete("bad\u0001id")
    await client.flush()
    outcome = await handle
    assert (outcome.status, outcome.errors, outcome.http_status) == (
        Status.REJECTED,
        {"_user_id": ["Invalid format"]},
        422,
    )
    await client.aclose()


async def test_events_go_out_up_to_max_in_flight_at_once(harness: Harness) -> None:
    client = harness.client(max_batch_items=1, max_in_flight=3)
    gateway = harness.gateway
    gateway.gate.close()
    handles = [await client.track(event(n)) for n in range(7)]
    await idle()
    assert len(gateway.requests) == 3
    assert gateway.in_flight == 3
    gateway.gate.open()
    await client.flush()
    assert len(gateway.requests) == 7
    assert gateway.max_in_flight == 3
    assert [(await h).status for h in handles] == [Status.ACCEPTED] * 7
    await client.aclose()
