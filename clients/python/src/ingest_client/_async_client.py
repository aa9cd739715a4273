"""The asyncio client: the delivery engine runs on the caller's event loop;
`await client.track(...)` enqueues (waiting for room under `overflow="block"`) and
returns an `asyncio.Future[Outcome]`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from ingest_client._base import ClientBase
from ingest_client._outcomes import Kind, Outcome


class AsyncClient(ClientBase):
    """Batches and sends events and contact writes from coroutines of one event loop.

    `outcome = await (await client.track(event))`, or keep the returned future and await
    it later (or never: `on_delivery`, `stats()` and the log report every outcome too).
    Use `async with AsyncClient(...) as client:` or call `await client.aclose()`.
    `on_delivery` is called on the loop and must not block.
    """

    def _start(self) -> None:
        self._closing = False
        self._closed: asyncio.Event | None = None

    async def track(self, event: Mapping[str, Any]) -> asyncio.Future[Outcome]:
        """Enqueue an event; it gets a UUID v7 `_event_id` if it has none."""
        return await self._enqueue(Kind.EVENT, event)

    async def upsert(self, contact: Mapping[str, Any]) -> asyncio.Future[Outcome]:
        """Enqueue a contact write (`_user_id` and attributes; None removes one)."""
        return await self._enqueue(Kind.CONTACT, contact)

    async def delete(self, user_id: str) -> asyncio.Future[Outcome]:
        """Enqueue the deletion of a contact, applied after the writes enqueued before it."""
        return await self._enqueue(Kind.DELETE, user_id)

    async def _enqueue(
        self, kind: Kind, payload: Mapping[str, Any] | str
    ) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        pending = self._intake.prepare(kind, payload, _resolver(future))
        await self._intake.admit_async(pending, self._engine.submit)
        return future

    async def flush(self) -> None:
        """Send everything enqueued so far; return once each of those items has its outcome."""
        if self._closing:
            await self._wait_closed()
            return
        await self._engine.flush()

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop taking items, flush, and return once everything has an outcome or `timeout`
        seconds passed (None: no limit but each batch's `retry_deadline`); what is still
        undelivered then is reported `failed` ("closed before delivery")."""
        if self._closing:
            await self._wait_closed()
            return
        self._closing = True
        self._closed = asyncio.Event()
        try:
            self._intake.close()
            await self._engine.close(timeout)
        finally:
            self._closed.set()

    async def _wait_closed(self) -> None:
        if self._closed is not None:
            await self._closed.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _resolver(future: asyncio.Future[Outcome]) -> Callable[[Outcome], None]:
    def resolve(outcome: Outcome) -> None:
        if not future.done():  # a cancelled handle does not cancel the delivery
            future.set_result(outcome)

    return resolve
