"""The synchronous client: a background thread runs the delivery engine on its own event
loop; `track()`/`upsert()`/`delete()` return a `concurrent.futures.Future[Outcome]`."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from types import TracebackType
from typing import Any, Self

from ingest_client._base import ClientBase
from ingest_client._batching import Pending
from ingest_client._outcomes import Kind, Outcome

logger = logging.getLogger("ingest_client")

#: How long a client still open when the interpreter exits gets to deliver its queue.
EXIT_CLOSE_TIMEOUT = 5.0


class Client(ClientBase):
    """Batches and sends events and contact writes from any thread.

    Call `close()` (or use `with Client(...) as client:`) before the program ends: it
    sends what is still queued. (A client still open when the interpreter exits is closed
    then, with a timeout of `EXIT_CLOSE_TIMEOUT` seconds.)

    The `on_delivery` callback runs on the client's thread (or on the caller's thread for
    an outcome decided at enqueue: dropped, too large); it must not call `flush()` or
    `close()`, and an enqueue from it never blocks (under `overflow="block"` a full queue
    then drops the item).
    """

    def _start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ingest-client", daemon=True)
        self._close_lock = threading.Lock()
        self._closing = False
        self._closed = threading.Event()
        # Items cross to the loop through an inbox, with one wake-up of the loop per run of
        # items rather than per item (each wake-up is a write to the loop's self-pipe).
        self._inbox: deque[Pending] = deque()
        self._inbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._thread.start()
        atexit.register(self._close_at_exit)

    def _close_at_exit(self) -> None:
        if not self._closing:
            logger.warning(
                "the interpreter is exiting and a Client is still open: closing it "
                "(at most %.0f s; call close() yourself to choose)",
                EXIT_CLOSE_TIMEOUT,
            )
            self.close(EXIT_CLOSE_TIMEOUT)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    # -- enqueue --------------------------------------------------------------------------

    def track(self, event: Mapping[str, Any]) -> Future[Outcome]:
        """Enqueue an event; it gets a UUID v7 `_event_id` if it has none."""
        return self._enqueue(Kind.EVENT, event)

    def upsert(self, contact: Mapping[str, Any]) -> Future[Outcome]:
        """Enqueue a contact write (`_user_id` and attributes; None removes one)."""
        return self._enqueue(Kind.CONTACT, contact)

    def delete(self, user_id: str) -> Future[Outcome]:
        """Enqueue the deletion of a contact, applied after the writes enqueued before it."""
        return self._enqueue(Kind.DELETE, user_id)

    def _enqueue(self, kind: Kind, payload: Mapping[str, Any] | str) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        pending = self._intake.prepare(kind, payload, _resolver(future))
        on_own_thread = threading.current_thread() is self._thread
        self._intake.admit(pending, self._submit, may_wait=not on_own_thread)
        return future

    def _submit(self, pending: Pending) -> None:
        # Called under the intake's lock, so items keep the order of the enqueue calls.
        self._inbox.append(pending)
        with self._inbox_lock:
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            self._drain_scheduled = False
        while self._inbox:
            self._engine.submit(self._inbox.popleft())

    # -- flush and close ------------------------------------------------------------------

    def flush(self) -> None:
        """Send everything enqueued so far; return once each of those items has its outcome."""
        self._not_on_own_thread("flush")
        if self._closing:
            self._closed.wait()
            return
        asyncio.run_coroutine_threadsafe(self._engine.flush(), self._loop).result()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking items, flush, and return once everything has an outcome or `timeout`
        seconds passed (None: no limit but each batch's `retry_deadline`); what is still
        undelivered then is reported `failed` ("closed before delivery")."""
        self._not_on_own_thread("close")
        with self._close_lock:
            first = not self._closing
            self._closing = True
        if not first:
            self._closed.wait()
            return
        atexit.unregister(self._close_at_exit)
        try:
            self._intake.close()
            future = asyncio.run_coroutine_threadsafe(self._engine.close(timeout), self._loop)
            future.result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._closed.set()

    def _not_on_own_thread(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                f"{what}() from the client's own thread (on_delivery) would deadlock"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _resolver(future: Future[Outcome]) -> Callable[[Outcome], None]:
    def resolve(outcome: Outcome) -> None:
        # InvalidStateError: the caller cancelled its handle; the outcome stands.
        with contextlib.suppress(InvalidStateError):
            future.set_result(outcome)

    return resolve
