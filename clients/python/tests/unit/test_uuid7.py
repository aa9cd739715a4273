from __future__ import annotations

import itertools
import re
import threading
import time
import uuid

from ingest_client import uuid7
from ingest_client._uuid7 import UUID7Generator

UUID7_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def timestamp_ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_format_version_variant_and_timestamp() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert UUID7_TEXT.match(str(value)), str(value)
    assert before <= timestamp_ms(value) <= after


def test_timestamp_is_the_clock_in_milliseconds() -> None:
    generate = UUID7Generator(now_ms=lambda: 0x0123_4567_89AB)
    assert str(generate()).startswith("01234567-89ab-7")


def test_ids_strictly_increase_within_one_millisecond() -> None:
    generate = UUID7Generator(now_ms=lambda: 1_700_000_000_000)
    ids = [generate() for _ in range(5_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Text order is the same as numeric order (what a database index on the text sees).
    texts = [str(i) for i in ids]
    assert texts == sorted(texts)
    assert all(i.version == 7 for i in ids)


def test_ids_increase_across_milliseconds_from_the_default_generator() -> None:
    ids = [uuid7() for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_clock_stepping_back_keeps_ids_increasing() -> None:
    times = iter([5_000, 4_000, 4_500])
    generate = UUID7Generator(now_ms=lambda: next(times))
    first, second, third = generate(), generate(), generate()
    assert first < second < third
    assert timestamp_ms(second) == 5_000
    assert timestamp_ms(third) == 5_000


def test_counter_exhaustion_borrows_the_next_millisecond() -> None:
    generate = UUID7Generator(now_ms=lambda: 9_000, random_bytes=lambda n: b"\xff" * n)
    first = generate()
    # The seed has its top bit clear: 2^41 - 1 with all-ones random bytes.
    assert (first.int >> 64) & 0xFFF == (2**41 - 1) >> 30
    generate._counter = (1 << 42) - 1  # the last value of this millisecond
    borrowed = generate()
    assert timestamp_ms(borrowed) == 9_001
    assert borrowed > first


def test_unique_across_threads() -> None:
    results: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def work(out: list[uuid.UUID]) -> None:
        out.extend(uuid7() for _ in range(2_000))

    threads = [threading.Thread(target=work, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for r in results for i in r]
    assert len(set(everything)) == 8_000
    for r in results:
        assert r == sorted(r)
