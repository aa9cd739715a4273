"""The thread-based Client: futures, flush, close, blocking from threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import textwrap
import threading
from typing import Any

import httpx
import pytest

from ingest_client import Client, Outcome, Status
from tests.unit.fakes import event


class ThreadedGateway:
    """A fake gateway for the Client, whose loop runs on another thread.

    While `held` is set, requests wait until `release()` is called from the test's thread.
    """

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.bodies: list[Any] = []
        self.lock = threading.Lock()
        self.held = False
        self._release: concurrent.futures.Future[None] = concurrent.futures.Future()

    def release(self) -> None:
        self.held = False
        self._release.set_result(None)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        with self.lock:
            self.bodies.append(body)
        if self.held:
            await asyncio.wrap_future(self._release)
        if self.status >= 300:
            return httpx.Response(self.status, headers={"Retry-After": "1"}, json={"message": "x"})
        items = [{"status": "success", "_user_id": i.get("_user_id")} for i in body or [{}]]
        answer = {"entity": {"successful": len(items), "failed": 0, "items": items}}
        return httpx.Response(self.status, json=answer)

    def client(self, **options: Any) -> Client:
        return Client(
            base_url="http://gateway.test",
            project="p1",
            datasource="web",
            token="ingk_test",
            transport=httpx.MockTransport(self.handle),
            **options,
        )


def test_track_returns_a_concurrent_future_and_flush_settles_it() -> None:
    gateway = ThreadedGateway()
    with gateway.client(flush_interval=60.0) as client:
        handle = client.track(event(1))
        assert isinstance(handle, concurrent.futures.Future)
        contact = client.upsert({"_user_id": "u1"})
        deleted = client.delete("u1")
        client.flush()  # long before the interval
        assert handle.done()
        assert deleted.done()
        outcome = handle.result()
        assert outcome.status is Status.ACCEPTED
        assert outcome.attempts == 1
        assert contact.result().status is Status.ACCEPTED
        assert deleted.result().status is Status.ACCEPTED
    assert not client._thread.is_alive()


def test_many_threads_enqueue_at_once() -> None:
    gateway = ThreadedGateway()
    client = gateway.client(max_batch_items=50)
    handles: list[concurrent.futures.Future[Outcome]] = []
    lock = threading.Lock()

    def produce(worker: int) -> None:
        mine = [client.track(event(worker * 1000 + n)) for n in range(250)]
        with lock:
            handles.extend(mine)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    assert len(handles) == 1000
    assert all(h.result(timeout=0).status is Status.ACCEPTED for h in handles)
    sent = [item["_event_id"] for body in gateway.bodies for item in body]
    assert len(sent) == len(set(sent)) == 1000
    stats = client.stats()
    assert (stats.enqueued, stats.accepted, stats.queued) == (1000, 1000, 0)


def test_overflow_block_blocks_the_calling_thread_until_there_is_room() -> None:
    gateway = ThreadedGateway()
    gateway.held = True
    client = gateway.client(max_queue_items=1, max_batch_items=1)
    first = client.track(event(1))
    returned = threading.Event()
    second: list[concurrent.futures.Future[Outcome]] = []

    def blocked() -> None:
        second.append(client.track(event(2)))
        returned.set()

    thread = threading.Thread(target=blocked)
    thread.start()
    # Bounded wait for something that must NOT happen while the queue is full.
    assert not returned.wait(0.3)
    gateway.release()
    assert returned.wait(10)
    thread.join()
    client.close()
    assert first.result().status is Status.ACCEPTED
    assert second[0].result().status is Status.ACCEPTED
    assert client.stats().dropped == 0


def test_overflow_drop_from_a_thread() -> None:
    gateway = ThreadedGateway()
    gateway.held = True
    client = gateway.client(max_queue_items=1, max_batch_items=1, overflow="drop")
    first = client.track(event(1))
    second = client.track(event(2))
    assert second.done()
    assert second.result().status is Status.DROPPED
    gateway.release()
    client.close()
    assert first.result().status is Status.ACCEPTED


def test_close_timeout_reports_failed_and_later_items_dropped() -> None:
    gateway = ThreadedGateway(status=503)
    client = gateway.client(max_batch_items=1)
    handles = [client.track(event(n)) for n in range(3)]
    client.close(timeout=0.5)
    for handle in handles:
        outcome = handle.result(timeout=0)
        assert outcome.status is Status.FAILED
        assert outcome.message == "closed before delivery"
    late = client.track(event(9))
    assert late.result(timeout=0).status is Status.DROPPED
    client.flush()  # returns at once after close
    client.close()  # and closing twice is fine


def test_flush_from_on_delivery_is_refused_rather_than_deadlocking() -> None:
    gateway = ThreadedGateway()
    errors: list[BaseException] = []
    holder: list[Client] = []

    def on_delivery(outcome: Outcome) -> None:
        try:
            holder[0].flush()
        except RuntimeError as exc:
            errors.append(exc)

    client = gateway.client(on_delivery=on_delivery)
    holder.append(client)
    client.track(event(1))
    client.close()
    assert len(errors) == 1
    assert "deadlock" in str(errors[0])


def test_invalid_items_and_options_raise_at_the_call() -> None:
    gateway = ThreadedGateway()
    with gateway.client() as client:
        with pytest.raises(TypeError):
            client.track(["not", "a", "mapping"])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            client.delete(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="JSON"):
            client.track(event(1, _event_parameters={"x": float("inf")}))
        assert client.stats().enqueued == 0
    with pytest.raises(ValueError, match="max_batch_items"):
        gateway.client(max_batch_items=101)
    with pytest.raises(ValueError, match="base_url"):
        Client(base_url="gateway.test", project="p", datasource="d", token="t")


def test_a_client_left_open_is_closed_when_the_interpreter_exits() -> None:
    script = textwrap.dedent(
        """
        import json, httpx
        from ingest_client import Client

        def handle(request):
            items = json.loads(request.content)
            print("sent", len(items), flush=True)
            answer = [{"status": "success", "_user_id": i["_user_id"]} for i in items]
            return httpx.Response(202, json={"entity": {"items": answer}})

        client = Client(
            base_url="http://gateway.test", project="p", datasource="d", token="t",
            flush_interval=60.0, transport=httpx.MockTransport(handle),
            on_delivery=lambda o: print(o.status.value, flush=True),
        )
        for n in range(3):
            client.track({"_user_id": f"u{n}", "_event_type": "x"})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[:4] == ["sent 3", "accepted", "accepted", "accepted"]
    assert "still open" in done.stderr
