"""UUID version 7 (RFC 9562), for the `_event_id` that `track()` generates.

The standard library has no uuid7 before Python 3.14 (this package supports 3.11), so it
is written here. Layout, most significant bit first:

    48 bits  Unix time in milliseconds
     4 bits  version (0b0111)
    12 bits  counter, high part ("rand_a")
     2 bits  variant (0b10)
    62 bits  counter, low 30 bits, then 32 random bits ("rand_b")

The 42-bit counter (RFC 9562 section 6.2, method 1) starts at a random value with its top
bit clear each new millisecond and is incremented for every further id in the same
millisecond, so ids from one generator are strictly increasing even within a millisecond
and when the wall clock steps back (the last timestamp is then kept).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable

_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1


class UUID7Generator:
    """A thread-safe source of monotonically increasing UUID v7 values."""

    def __init__(
        self,
        *,
        now_ms: Callable[[], int] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._now_ms = now_ms if now_ms is not None else (lambda: time.time_ns() // 1_000_000)
        self._random_bytes = random_bytes
        # The low 32 bits only make ids of one millisecond harder to guess; uniqueness and
        # order come from the timestamp and the counter. A seeded PRNG spares a syscall.
        self._tail = random.Random(random_bytes(16))
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self) -> uuid.UUID:
        with self._lock:
            now = self._now_ms()
            if now > self._last_ms:
                self._last_ms = now
                # Top bit clear leaves at least 2^41 increments before the counter overflows.
                seed = int.from_bytes(self._random_bytes(6), "big")
                self._counter = seed & (_COUNTER_MAX >> 1)
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    # Exhausted this millisecond: borrow the next one (stays monotonic).
                    self._last_ms += 1
                    self._counter = 0
            ms = self._last_ms & ((1 << 48) - 1)
            counter = self._counter
            tail = self._tail.getrandbits(32)
        rand_a = counter >> 30
        rand_b = ((counter & ((1 << 30) - 1)) << 32) | tail
        value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
        return uuid.UUID(int=value)


_default = UUID7Generator()


def uuid7() -> uuid.UUID:
    """A new UUID v7 from the process-wide generator."""
    return _default()
