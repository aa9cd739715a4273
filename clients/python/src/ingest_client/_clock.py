"""Time, behind a protocol so the tests can run the client on a fake clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the client needs of time.

    `monotonic()` measures intervals (batch age, backoff, deadlines); `time()` is Unix wall
    time, used only to read `X-RateLimit-Reset`; `sleep()` waits on the monotonic clock.
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time` and `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
