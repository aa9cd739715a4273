"""A fake clock and a fake gateway for the unit tests."""

from __future__ import annotations

import asyncio
import gzip
import heapq
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ingest_client import AsyncClient


async def idle() -> None:
    """Let every task that can run, run, until the loop has nothing ready.

    Only time (the fake clock) or a gate can then move things on. Reads the loop's ready
    queue, a private attribute of asyncio's default loop; falls back to many yields.
    """
    loop = asyncio.get_running_loop()
    quiet = 0
    for _ in range(10_000):
        await asyncio.sleep(0)
        ready = getattr(loop, "_ready", None)
        if ready is None:
            quiet += 1
            if quiet > 200:
                return
        elif len(ready) == 0:
            quiet += 1
            if quiet >= 3:
                return
        else:
            quiet = 0
    raise AssertionError("the event loop never went idle")


class Gate:
    """Holds requests while closed; `release()` lets the oldest held ones through."""

    def __init__(self) -> None:
        self.is_open = True
        self._held: deque[asyncio.Future[None]] = deque()

    def close(self) -> None:
        self.is_open = False

    def open(self) -> None:
        self.is_open = True
        self.release(len(self._held))

    def release(self, count: int = 1) -> None:
        for _ in range(min(count, len(self._held))):
            waiter = self._held.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def passage(self) -> None:
        if self.is_open:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held.append(waiter)
        await waiter


class FakeClock:
    """Virtual time: `sleep()` waits until a test `advance()`s past its deadline."""

    def __init__(self, wall_start: float = 1_800_000_000.0) -> None:
        self._now = 0.0
        self._wall_start = wall_start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_start + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, self._seq, waiter))
        self._seq += 1
        await waiter

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline, in order."""
        target = self._now + seconds
        await idle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, waiter = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not waiter.done():
                waiter.set_result(None)
            await idle()
        self._now = target
        await idle()


@dataclass
class Seen:
    """A request as the fake gateway received it."""

    method: str
    path: str
    query: str
    headers: httpx.Headers
    body: Any
    raw: bytes
    at: float


Reply = httpx.Response | Exception
Responder = Callable[[Seen, int], Reply | Awaitable[Reply]]


def batch_answer(seen: Seen, errors: dict[int, dict[str, list[str]]] | None = None) -> Any:
    """A batch answer for the request: `success` for each item but those in `errors`."""
    errors = errors or {}
    items: list[Any] = seen.body if isinstance(seen.body, list) else [None]
    entries = []
    for i, item in enumerate(items):
        user = item.get("_user_id") if isinstance(item, dict) else seen.path.rsplit("/", 1)[-1]
        entry: dict[str, Any] = {"_user_id": user}
        if i in errors:
            entry.update(status="error", errors=errors[i])
        else:
            entry["status"] = "success"
        entries.append(entry)
    failed = len(errors)
    return {"entity": {"successful": len(entries) - failed, "failed": failed, "items": entries}}


def ok(seen: Seen, number: int) -> Reply:
    """The default answer: every item accepted (200 under ?_sync, else 202)."""
    return httpx.Response(200 if "_sync" in seen.query else 202, json=batch_answer(seen))


class FakeGateway:
    """An `httpx.MockTransport` that records requests and answers through `responder`.

    `responder(seen, number)` gets each request and its number (0, 1, ...) and returns a
    response, or an exception to raise (a network error). Close `gate` to hold requests
    until it opens or releases them.
    """

    def __init__(self, clock: FakeClock, responder: Responder = ok) -> None:
        self.clock = clock
        self.responder = responder
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate = Gate()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        text = gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw
        seen = Seen(
            method=request.method,
            path=request.url.raw_path.split(b"?")[0].decode(),
            query=request.url.query.decode(),
            headers=request.headers,
            body=json.loads(text) if text else None,
            raw=text,
            at=self.clock.monotonic(),
        )
        number = len(self.requests)
        self.requests.append(seen)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.passage()
            reply = self.responder(seen, number)
            if not isinstance(reply, httpx.Response | Exception):
                reply = await reply
        finally:
            self.in_flight -= 1
        if isinstance(reply, Exception):
            raise reply
        return reply

    def paths(self) -> list[str]:
        return [f"{s.method} {s.path.rsplit('/stream/', 1)[-1]}" for s in self.requests]

    def sizes(self) -> list[int]:
        return [len(s.body) for s in self.requests if isinstance(s.body, list)]


@dataclass
class Harness:
    """An AsyncClient wired to a fake gateway and a fake clock."""

    clock: FakeClock
    gateway: FakeGateway
    outcomes: list[Any] = field(default_factory=list)

    def client(self, **options: Any) -> AsyncClient:
        defaults: dict[str, Any] = {
            "base_url": "http://gateway.test",
            "project": "p1",
            "datasource": "web",
            "token": "ingk_test",
            "transport": self.gateway.transport(),
            "clock": self.clock,
            "random": lambda: 0.0,
            "on_delivery": self.outcomes.append,
        }
        defaults.update(options)
        return AsyncClient(**defaults)


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {"_user_id": f"user-{n}", "_event_type": "viewed", **extra}
