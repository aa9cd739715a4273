"""The delivery side, on an asyncio event loop: items into lanes, batches into requests,
answers into outcomes, retries until the deadline; `flush()` and `close()`.

The sync `Client` runs this on its own thread's loop, the `AsyncClient` on the caller's.
Batching and order live in `_batching.py`, the retry policy in `_retry.py`, the shape of
outcomes in `_outcomes.py`.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ingest_client._batching import Batch, Lane, Pending
from ingest_client._clock import Clock
from ingest_client._config import Config
from ingest_client._intake import Intake
from ingest_client._outcomes import (
    Counters,
    Kind,
    Outcome,
    Status,
    UnreadableAnswerError,
    item_results,
    request_message,
)
from ingest_client._retry import Backoff, EndpointPause, is_retriable, server_wait
from ingest_client._version import __version__

logger = logging.getLogger("ingest_client")

CLOSED_BEFORE_DELIVERY = "closed before delivery"

#: The rate-limited endpoint each kind of write counts against (`GET /stream` lists them).
_ENDPOINT = {Kind.EVENT: "events", Kind.CONTACT: "contacts", Kind.DELETE: "contacts_delete"}


def _describe(batch: Batch) -> str:
    """For the log: "10 events", "1 contact write", "the delete of contact 'u1'"."""
    if batch.kind is Kind.DELETE:
        return f"the delete of contact {batch.items[0].item['_user_id']!r}"
    count = len(batch.items)
    noun = "event" if batch.kind is Kind.EVENT else "contact write"
    return f"{count} {noun}{'s' if count != 1 else ''}"


@dataclass(frozen=True, slots=True)
class _Retry:
    """An attempt worth repeating: a network error or a retriable status."""

    status: int | None
    message: str
    server_wait: float


class Engine:
    """Sends what the intake admits and reports every item's outcome back through it."""

    def __init__(
        self,
        config: Config,
        intake: Intake,
        counters: Counters,
        *,
        clock: Clock,
        random: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._intake = intake
        self._counters = counters
        self._clock = clock
        self._backoff = Backoff(config.retry_initial_backoff, config.retry_max_backoff, random)
        headers = {
            "Authorization": f"Bearer {config.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"ingest-client-python/{__version__}",
        }
        self._http = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=config.effective_request_timeout,
            limits=httpx.Limits(max_connections=config.max_in_flight + 2),
        )
        self._pauses = {name: EndpointPause(clock) for name in _ENDPOINT.values()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsettled: OrderedDict[int, Pending] = OrderedDict()
        self._next_seq = 0
        self._flush_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        common: dict[str, Any] = {
            "max_items": config.max_batch_items,
            "max_bytes": config.max_batch_bytes,
            "interval": config.flush_interval,
            "clock": clock,
            "deliver": self._deliver,
            "spawn": self._spawn,
        }
        self._events = Lane(kind=Kind.EVENT, concurrency=config.max_in_flight, **common)
        # Contact writes: one request at a time, in order (docs/clients.md, "Order").
        self._contacts = Lane(kind=Kind.CONTACT, concurrency=1, **common)
        self._closed = False

    # -- intake -------------------------------------------------------------------------

    def submit(self, pending: Pending) -> None:
        """Take an admitted item (on the engine's loop)."""
        if self._closed:  # cannot happen through Intake; kept as a guard
            self._intake.finish(
                pending,
                Outcome(Status.DROPPED, pending.kind, pending.item, message="client closed"),
                held=True,
            )
            return
        pending.seq = self._next_seq
        self._next_seq += 1
        self._unsettled[pending.seq] = pending
        (self._events if pending.kind is Kind.EVENT else self._contacts).add(pending)

    # -- flush and close -----------------------------------------------------------------

    async def flush(self) -> None:
        """Send the open batches now; return once every item enqueued so far has its outcome."""
        self._events.close_open_batch()
        self._contacts.close_open_batch()
        if not self._unsettled:
            return
        last = next(reversed(self._unsettled))
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((last, waiter))
        await waiter

    async def close(self, timeout: float | None) -> None:
        """Flush, waiting at most `timeout` seconds; then report what is left `failed`.

        The intake must already be closed (no new items).
        """
        if self._closed:
            return
        drained = asyncio.ensure_future(self.flush())
        if timeout is None:
            await drained
        else:
            timer = asyncio.ensure_future(self._clock.sleep(timeout))
            await asyncio.wait({drained, timer}, return_when=asyncio.FIRST_COMPLETED)
            timer.cancel()
            drained.cancel()
            await asyncio.gather(drained, timer, return_exceptions=True)
        self._closed = True
        self._events.stop()
        self._contacts.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = list(self._unsettled.values())
        if left:
            logger.error("closing: %d items not delivered in time, reported failed", len(left))
        for pending in left:
            batch = pending.batch
            self._settle(
                pending,
                Outcome(
                    Status.FAILED,
                    pending.kind,
                    pending.item,
                    attempts=batch.attempts if batch is not None else 0,
                    http_status=batch.last_status if batch is not None else None,
                    message=CLOSED_BEFORE_DELIVERY,
                ),
            )
        await self._http.aclose()

    # -- delivery -----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("ingest_client task failed", exc_info=task.exception())

    async def _deliver(self, batch: Batch) -> None:
        try:
            await self._deliver_with_retries(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug here must not leave items without an outcome.
            logger.exception("internal error while delivering %s", _describe(batch))
            self._settle_batch(batch, Status.FAILED, message=f"internal error: {exc!r}")

    async def _deliver_with_retries(self, batch: Batch) -> None:
        pause = self._pauses[_ENDPOINT[batch.kind]]
        while True:
            await pause.wait()
            if batch.first_attempt_at is None:
                batch.first_attempt_at = self._clock.monotonic()
            batch.attempts += 1
            self._counters.add(requests=1, sent=len(batch.items), retries=int(batch.attempts > 1))
            result = await self._attempt(batch)
            if not isinstance(result, _Retry):
                for pending, outcome in zip(batch.items, result, strict=True):
                    self._settle(pending, outcome)
                return
            batch.last_status = result.status
            batch.last_error = result.message
            now = self._clock.monotonic()
            sleep = self._backoff.sleep_before(batch.attempts, result.server_wait)
            if result.status == 429:
                pause.pause(now + sleep)
            if now + sleep > batch.first_attempt_at + self._config.retry_deadline:
                logger.error(
                    "giving up %s after %d attempts: %s",
                    _describe(batch),
                    batch.attempts,
                    result.message,
                )
                self._settle_batch(
                    batch, Status.FAILED, message=result.message, http_status=result.status
                )
                return
            logger.info(
                "retrying %s in %.2fs (attempt %d: %s)",
                _describe(batch),
                sleep,
                batch.attempts,
                result.message,
            )
            await self._clock.sleep(sleep)

    async def _attempt(self, batch: Batch) -> list[Outcome] | _Retry:
        method, url, content = self._request(batch)
        # A delete has no body, so nothing to say about its encoding.
        gzipped = self._config.gzip and content is not None
        headers = {"Content-Encoding": "gzip"} if gzipped else None
        try:
            response = await self._http.request(method, url, content=content, headers=headers)
        except httpx.TransportError as exc:
            return _Retry(
                None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 0
            )
        status = response.status_code
        if is_retriable(status):
            message = request_message(response.content, status, response.reason_phrase)
            wait = server_wait(status, response.headers, self._clock.time())
            return _Retry(status, f"HTTP {status}: {message}", wait)
        return self._final_outcomes(batch, response)

    def _request(self, batch: Batch) -> tuple[str, str, bytes | None]:
        base = self._config.stream_url
        sync = "?_sync" if self._config.sync else ""
        if batch.kind is Kind.DELETE:
            user_id = quote(batch.items[0].item["_user_id"], safe="")
            return "DELETE", f"{base}/contacts/{user_id}", None
        path = "events" if batch.kind is Kind.EVENT else "contacts"
        content = gzip.compress(batch.body) if self._config.gzip else batch.body
        return "POST", f"{base}/{path}{sync}", content

    def _final_outcomes(self, batch: Batch, response: httpx.Response) -> list[Outcome]:
        status = response.status_code
        attempts = batch.attempts
        if status not in (200, 202, 422):
            message = request_message(response.content, status, response.reason_phrase)
            logger.error("request of %s refused: HTTP %d: %s", _describe(batch), status, message)
            return [
                Outcome(
                    Status.REJECTED,
                    p.kind,
                    p.item,
                    attempts=attempts,
                    errors={"_request": [message]},
                    http_status=status,
                )
                for p in batch.items
            ]
        try:
            results = item_results(response.content, len(batch.items))
        except UnreadableAnswerError as exc:
            logger.error("unreadable answer (HTTP %d) to %s: %s", status, _describe(batch), exc)
            return [
                Outcome(
                    Status.FAILED,
                    p.kind,
                    p.item,
                    attempts=attempts,
                    http_status=status,
                    message=f"unreadable answer: {exc}",
                )
                for p in batch.items
            ]
        committed = self._config.sync and status == 200 and batch.kind is not Kind.DELETE
        outcomes: list[Outcome] = []
        for pending, (success, errors) in zip(batch.items, results, strict=True):
            if success:
                outcomes.append(
                    Outcome(
                        Status.ACCEPTED,
                        pending.kind,
                        pending.item,
                        attempts=attempts,
                        committed=committed,
                        http_status=status,
                    )
                )
            else:
                outcomes.append(
                    Outcome(
                        Status.REJECTED,
                        pending.kind,
                        pending.item,
                        attempts=attempts,
                        errors=errors,
                        http_status=status,
                    )
                )
        return outcomes

    # -- outcomes -----------------------------------------------------------------------

    def _settle_batch(
        self, batch: Batch, status: Status, *, message: str, http_status: int | None = None
    ) -> None:
        for pending in batch.items:
            outcome = Outcome(
                status,
                pending.kind,
                pending.item,
                attempts=batch.attempts,
                http_status=http_status,
                message=message,
            )
            self._settle(pending, outcome)

    def _settle(self, pending: Pending, outcome: Outcome) -> None:
        if self._unsettled.pop(pending.seq, None) is None:
            return
        self._intake.finish(pending, outcome, held=True)
        first = next(iter(self._unsettled), None)
        while self._flush_waiters and (first is None or first > self._flush_waiters[0][0]):
            _, waiter = self._flush_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
