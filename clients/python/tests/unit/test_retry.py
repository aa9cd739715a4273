"""Retry classification, backoff bounds and the wait headers (pure policy)."""

from __future__ import annotations

import random
from email.utils import formatdate

import httpx
import pytest

from ingest_client._retry import Backoff, backoff_cap, is_retriable, server_wait

NOW = 1_800_000_000.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retried_statuses(status: int) -> None:
    assert is_retriable(status)


@pytest.mark.parametrize(
    "status", [200, 202, 400, 401, 403, 404, 405, 409, 413, 415, 422, 431, 501, 505]
)
def test_never_retried_statuses(status: int) -> None:
    assert not is_retriable(status)


def test_backoff_cap_doubles_from_initial_up_to_maximum() -> None:
    caps = [backoff_cap(n, 0.2, 30.0) for n in range(1, 11)]
    assert caps == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0])
    assert backoff_cap(10_000, 0.2, 30.0) == 30.0  # no overflow far out
    with pytest.raises(ValueError, match="start at 1"):
        backoff_cap(0, 0.2, 30.0)


def test_full_jitter_spans_zero_to_the_cap() -> None:
    assert Backoff(0.2, 30.0, random=lambda: 0.0).sleep_before(3) == 0.0
    top = Backoff(0.2, 30.0, random=lambda: 0.999_999).sleep_before(3)
    assert 0.79 < top < 0.8
    rng = random.Random(1)
    backoff = Backoff(0.5, 4.0, random=rng.random)
    for retry in range(1, 12):
        cap = backoff_cap(retry, 0.5, 4.0)
        samples = [backoff.sleep_before(retry) for _ in range(300)]
        assert all(0.0 <= s <= cap for s in samples)
        # Full jitter, not "cap plus a little": the spread covers most of [0, cap].
        assert min(samples) < 0.1 * cap
        assert max(samples) > 0.9 * cap


def test_sleep_is_at_least_what_the_server_asked() -> None:
    backoff = Backoff(0.2, 30.0, random=lambda: 0.5)
    assert backoff.sleep_before(1, server_wait=7.0) == 7.0
    assert backoff.sleep_before(1, server_wait=0.01) == pytest.approx(0.1)
    # Above the maximum backoff too: the server's word wins.
    assert backoff.sleep_before(1, server_wait=45.0) == 45.0


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): v for k, v in values.items()})


def test_retry_after_seconds_on_429_and_503_only() -> None:
    h = headers(retry_after="3")
    assert server_wait(429, h, NOW) == 3.0
    assert server_wait(503, h, NOW) == 3.0
    for status in (500, 502, 504, 408, None):
        assert server_wait(status, h, NOW) == 0.0


def test_rate_limit_reset_on_429_when_later_than_retry_after() -> None:
    later = headers(retry_after="2", x_ratelimit_reset=str(int(NOW) + 20))
    assert server_wait(429, later, NOW) == pytest.approx(20.0)
    earlier = headers(retry_after="19", x_ratelimit_reset=str(int(NOW) + 5))
    assert server_wait(429, earlier, NOW) == pytest.approx(19.0)
    # Only a 429 is a rate-limit answer: a 503's reset header is not a wait.
    assert server_wait(503, headers(x_ratelimit_reset=str(int(NOW) + 20)), NOW) == 0.0
    # A reset in the past asks for nothing.
    assert server_wait(429, headers(x_ratelimit_reset=str(int(NOW) - 5)), NOW) == 0.0


def test_header_names_are_case_insensitive() -> None:
    h = httpx.Headers({"RETRY-AFTER": "4", "X-RATELIMIT-RESET": str(int(NOW) + 6)})
    assert server_wait(429, h, NOW) == pytest.approx(6.0)


def test_retry_after_as_http_date_and_garbage() -> None:
    assert server_wait(503, headers(retry_after=formatdate(NOW + 30, usegmt=True)), NOW) == (
        pytest.approx(30.0)
    )
    assert server_wait(503, headers(retry_after="soon"), NOW) == 0.0
    assert server_wait(429, headers(x_ratelimit_reset="never"), NOW) == 0.0
    assert server_wait(503, headers(retry_after="-4"), NOW) == 0.0
