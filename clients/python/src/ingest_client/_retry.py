"""When to retry and how long to wait (docs/clients.md, "Retries").

Pure policy, no I/O: the delivery loop in `_engine.py` asks `is_retriable()` about each
answer, `backoff()` for the sleep before a retry, and keeps one `EndpointPause` per
endpoint so that a 429 holds back every request to that endpoint.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ingest_client._clock import Clock

#: Answers worth sending again (the same body): the request may succeed later.
RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_retriable(status: int) -> bool:
    """True for 408, 429, 500, 502, 503, 504. Everything else is final.

    (Network errors, which have no status, are always retried.)
    """
    return status in RETRIABLE_STATUSES


def backoff_cap(retry: int, initial: float, maximum: float) -> float:
    """The upper bound of the sleep before retry number `retry` (1, 2, ...)."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # 2 ** 64 is far past any maximum; capping the exponent avoids a float overflow.
    return min(maximum, initial * 2.0 ** min(retry - 1, 64))


def parse_retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a `Retry-After` value: delta-seconds or an HTTP date; 0 if absent
    or unreadable."""
    if value is None:
        return 0.0
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - now)


def server_wait(status: int | None, headers: Mapping[str, str], now: float) -> float:
    """The least time the answer asks for before the next attempt, in seconds.

    `Retry-After` on 429 and 503; on a 429 also until `X-RateLimit-Reset` (Unix seconds)
    when that is later. `headers` must be case-insensitive (httpx.Headers is); `now` is
    Unix time.
    """
    wait = 0.0
    if status in (429, 503):
        wait = parse_retry_after(headers.get("retry-after"), now)
    if status == 429:
        reset = headers.get("x-ratelimit-reset")
        if reset is not None:
            with contextlib.suppress(ValueError):
                wait = max(wait, float(reset) - now)
    return wait


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, never shorter than what the server asked."""

    initial: float
    maximum: float
    random: Callable[[], float] = random.random

    def sleep_before(self, retry: int, server_wait: float = 0.0) -> float:
        """Uniform in `[0, min(maximum, initial * 2^(retry-1))]`, at least `server_wait`."""
        jitter = self.random() * backoff_cap(retry, self.initial, self.maximum)
        return max(jitter, server_wait)


class EndpointPause:
    """No request to the endpoint starts before `until` (monotonic seconds).

    A 429 is a limit on the datasource's endpoint, not on one batch, so the batch that met
    it pauses the whole endpoint until its own retry time.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.until = 0.0

    def pause(self, until: float) -> None:
        self.until = max(self.until, until)

    async def wait(self) -> None:
        # A loop: another 429 may push `until` further while we sleep.
        while (remaining := self.until - self._clock.monotonic()) > 0:
            await self._clock.sleep(remaining)
