"""The enqueue side, shared by the sync and asyncio clients: copy and encode an item, give
an event its id, let it into the bounded queue (or block, or drop it), and report final
outcomes (counters, the caller's handle, `on_delivery`, the log).

It runs in the caller's thread (sync client) or on the caller's event loop (asyncio
client); the delivery side (`_engine.py`) runs on an event loop and calls `finish()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ingest_client._batching import Pending, body_size, encode_item
from ingest_client._config import Config
from ingest_client._outcomes import Counters, Kind, Outcome, Status, counter_for
from ingest_client._uuid7 import uuid7

logger = logging.getLogger("ingest_client")

CLOSED_MESSAGE = "client closed"
QUEUE_FULL_MESSAGE = "queue full"
TOO_LARGE_ERRORS = {"_item": ["Too large"]}


class Capacity:
    """Room for `limit` items held at once, waited for by threads or by coroutines."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._async_waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        with self._cond:
            if self._closed or self._used >= self._limit:
                return False
            self._used += 1
            return True

    def acquire(self) -> bool:
        """Block the calling thread until there is room; False once closed."""
        with self._cond:
            while not self._closed and self._used >= self._limit:
                self._cond.wait()
            if self._closed:
                return False
            self._used += 1
            return True

    async def acquire_async(self) -> bool:
        """Wait (without blocking the loop) until there is room; False once closed."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._closed:
                    return False
                if self._used < self._limit:
                    self._used += 1
                    return True
                waiter: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the wake-up on rather than lose it
                raise

    def release(self) -> None:
        with self._cond:
            self._used -= 1
            self._cond.notify()
        self._wake_one()

    def close(self) -> None:
        """Wake every waiter; from now on nothing is admitted."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiters = list(self._async_waiters)
            self._async_waiters.clear()
        for waiter in waiters:
            _set_soon(waiter)

    def _wake_one(self) -> None:
        with self._cond:
            while self._async_waiters:
                waiter = self._async_waiters.popleft()
                if not waiter.done():
                    _set_soon(waiter)
                    return


def _set_soon(waiter: asyncio.Future[None]) -> None:
    """Resolve a future from any thread, on its own loop."""

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    # RuntimeError: its loop is closed, so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        waiter.get_loop().call_soon_threadsafe(wake)


class Intake:
    """Admission of items into the client and the reporting of their outcomes."""

    def __init__(
        self,
        config: Config,
        counters: Counters,
        *,
        new_event_id: Callable[[], object] = uuid7,
    ) -> None:
        self._config = config
        self._counters = counters
        self._new_event_id = new_event_id
        self.capacity = Capacity(config.max_queue_items)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def prepare(
        self, kind: Kind, payload: Mapping[str, Any] | str, resolve: Callable[[Outcome], None]
    ) -> Pending:
        """Copy and encode the item now (later changes by the caller do not travel).

        Raises TypeError/ValueError for an item that is not a mapping or not JSON.
        """
        if kind is Kind.DELETE:
            if not isinstance(payload, str):
                raise TypeError(f"delete() takes a user id string, got {type(payload).__name__}")
            return Pending(kind, {"_user_id": payload}, b"", resolve)
        if not isinstance(payload, Mapping):
            raise TypeError(f"{kind.value} must be a mapping, got {type(payload).__name__}")
        item = dict(payload)
        if kind is Kind.EVENT and item.get("_event_id") is None:
            # Fixed before queueing, so every retry carries the same id.
            item["_event_id"] = str(self._new_event_id())
        return Pending(kind, item, encode_item(item), resolve)

    def admit(self, pending: Pending, submit: Callable[[Pending], None], *, may_wait: bool) -> None:
        """Let an item in from a thread: blocks while the queue is full under `block`."""
        if self._refused_at_once(pending):
            return
        if not self.capacity.try_acquire():
            if self._config.overflow == "drop" or not may_wait or self._closed:
                self._drop(pending)
                return
            if not self.capacity.acquire():
                self._drop(pending)
                return
        self._hand_over(pending, submit)

    async def admit_async(self, pending: Pending, submit: Callable[[Pending], None]) -> None:
        """Let an item in from a coroutine: awaits room while the queue is full under `block`."""
        if self._refused_at_once(pending):
            return
        if not self.capacity.try_acquire():
            if self._config.overflow == "drop" or self._closed:
                self._drop(pending)
                return
            if not await self.capacity.acquire_async():
                self._drop(pending)
                return
        self._hand_over(pending, submit)

    def close(self) -> None:
        """Take nothing more: later items, and callers waiting for room, are dropped."""
        with self._lock:
            self._closed = True
        self.capacity.close()

    def finish(self, pending: Pending, outcome: Outcome, *, held: bool) -> None:
        """Report an item's final outcome; `held` when it was holding a place in the queue."""
        if held:
            self._counters.add(**{counter_for(outcome.status): 1, "queued": -1})
            self.capacity.release()
        else:
            self._counters.add(**{"enqueued": 1, counter_for(outcome.status): 1})
        if outcome.status is Status.DROPPED:
            logger.warning("dropped %s: %s", outcome.kind.value, outcome.message)
        pending.resolve(outcome)
        callback = self._config.on_delivery
        if callback is not None:
            try:
                callback(outcome)
            except Exception:
                logger.exception("on_delivery callback raised")

    def _refused_at_once(self, pending: Pending) -> bool:
        too_large = body_size(len(pending.encoded), 1) > self._config.max_batch_bytes
        if pending.kind is not Kind.DELETE and too_large:
            outcome = Outcome(
                Status.REJECTED,
                pending.kind,
                pending.item,
                errors={k: list(v) for k, v in TOO_LARGE_ERRORS.items()},
            )
            self.finish(pending, outcome, held=False)
            return True
        if self._closed:
            self._drop(pending, CLOSED_MESSAGE)
            return True
        return False

    def _drop(self, pending: Pending, message: str | None = None) -> None:
        if message is None:
            message = CLOSED_MESSAGE if self._closed else QUEUE_FULL_MESSAGE
        outcome = Outcome(Status.DROPPED, pending.kind, pending.item, message=message)
        self.finish(pending, outcome, held=False)

    def _hand_over(self, pending: Pending, submit: Callable[[Pending], None]) -> None:
        with self._lock:
            if not self._closed:
                self._counters.add(enqueued=1, queued=1)
                submit(pending)
                return
        self.capacity.release()
        self._drop(pending, CLOSED_MESSAGE)
