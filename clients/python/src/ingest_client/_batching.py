"""Items into batches, and batches out in the right order (docs/clients.md, "Batching"
and "Order").

- `encode_item()`: the exact bytes an item will take in a request body.
- `BatchBuilder`: one open batch, closed by count (`max_batch_items`) or when one more
  item would take the encoded body over `max_batch_bytes`.
- `Lane`: one stream of batches to one endpoint family. It owns the open batch and its
  `flush_interval` timer, the queue of closed batches, and how many of them may be in
  delivery at once: events up to `max_in_flight`, contact writes one at a time, in order,
  each finally answered before the next starts (a delete alone, between the upsert
  batches around it).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ingest_client._clock import Clock
from ingest_client._outcomes import Kind, Outcome


def encode_item(item: object) -> bytes:
    """The item as it goes into the body: compact UTF-8 JSON.

    Raises TypeError/ValueError for what JSON cannot carry (e.g. a datetime, NaN).
    """
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def body_size(item_sizes: int, count: int) -> int:
    """Bytes of `[a,b,...]` holding `count` items whose encodings add up to `item_sizes`."""
    return 2 + item_sizes + max(0, count - 1)


@dataclass(eq=False, slots=True)
class Pending:
    """One enqueued item on its way to an outcome."""

    kind: Kind
    item: dict[str, Any]
    encoded: bytes
    resolve: Callable[[Outcome], None]
    seq: int = 0
    batch: Batch | None = None


@dataclass(eq=False, slots=True)
class Batch:
    """Items that go out in one request, retried whole."""

    kind: Kind
    items: list[Pending]
    body: bytes
    attempts: int = 0
    first_attempt_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    settled: bool = field(default=False)

    def __post_init__(self) -> None:
        for pending in self.items:
            pending.batch = self


class BatchBuilder:
    """The open batch of a lane, measured as items are added."""

    def __init__(self, kind: Kind, max_items: int, max_bytes: int) -> None:
        self.kind = kind
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._items: list[Pending] = []
        self._item_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """The encoded body size so far."""
        return body_size(self._item_bytes, len(self._items))

    def fits(self, pending: Pending) -> bool:
        """Whether one more item keeps the batch within both limits."""
        if len(self._items) >= self._max_items:
            return False
        count = len(self._items) + 1
        return body_size(self._item_bytes + len(pending.encoded), count) <= self._max_bytes

    @property
    def full(self) -> bool:
        return len(self._items) >= self._max_items

    def add(self, pending: Pending) -> None:
        self._items.append(pending)
        self._item_bytes += len(pending.encoded)

    def build(self) -> Batch:
        body = b"[" + b",".join(p.encoded for p in self._items) + b"]"
        return Batch(self.kind, self._items, body)


Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class Lane:
    """Batches of one kind of write, sent by at most `concurrency` deliveries at once.

    Closed batches start in the order they were closed; with `concurrency == 1` each one
    is finally answered (after all its retries) before the next starts, which is what keeps
    contact writes in order.
    """

    def __init__(
        self,
        *,
        kind: Kind,
        max_items: int,
        max_bytes: int,
        interval: float,
        concurrency: int,
        clock: Clock,
        deliver: Callable[[Batch], Awaitable[None]],
        spawn: Spawn,
    ) -> None:
        self._kind = kind
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._interval = interval
        self._concurrency = concurrency
        self._clock = clock
        self._deliver = deliver
        self._spawn = spawn
        self._open: BatchBuilder | None = None
        self._timer: asyncio.Task[None] | None = None
        self._ready: deque[Batch] = deque()
        self._running = 0
        self._stopped = False

    @property
    def busy(self) -> bool:
        """Whether anything is open, waiting or in delivery."""
        return self._open is not None or bool(self._ready) or self._running > 0

    def add(self, pending: Pending) -> None:
        """Take an item whose encoding fits in a batch of its own."""
        if pending.kind is Kind.DELETE:
            # A delete goes alone, after the upserts enqueued before it.
            self.close_open_batch()
            self._ready.append(Batch(Kind.DELETE, [pending], b""))
            self._pump()
            return
        if self._open is not None and not self._open.fits(pending):
            self.close_open_batch()
        if self._open is None:
            self._open = BatchBuilder(self._kind, self._max_items, self._max_bytes)
            self._timer = self._spawn(self._close_after_interval(self._open))
        self._open.add(pending)
        if self._open.full:
            self.close_open_batch()

    def close_open_batch(self) -> None:
        """Queue the open batch for delivery now (count, bytes, interval, flush, close)."""
        if self._open is None:
            return
        self._ready.append(self._open.build())
        self._open = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pump()

    def stop(self) -> None:
        """Start nothing more (the client is closing and its time is up)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    async def _close_after_interval(self, builder: BatchBuilder) -> None:
        await self._clock.sleep(self._interval)
        if self._open is builder:
            self._timer = None  # this task is finishing; do not cancel it
            self.close_open_batch()

    def _pump(self) -> None:
        while not self._stopped and self._running < self._concurrency and self._ready:
            batch = self._ready.popleft()
            self._running += 1
            self._spawn(self._run(batch))

    async def _run(self, batch: Batch) -> None:
        try:
            await self._deliver(batch)
        finally:
            self._running -= 1
            self._pump()
