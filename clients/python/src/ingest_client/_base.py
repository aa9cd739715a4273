"""What the sync and asyncio clients have in common: the options and the parts they are
made of (intake, engine, counters)."""

from __future__ import annotations

import random as _random
from collections.abc import Callable

import httpx

from ingest_client._clock import Clock, SystemClock
from ingest_client._config import Config, Overflow
from ingest_client._engine import Engine
from ingest_client._intake import Intake
from ingest_client._outcomes import Counters, Outcome, Stats
from ingest_client._uuid7 import uuid7


class ClientBase:
    """Options (docs/clients.md, "Configuration"); see the README for each one.

    Testing hooks (keyword-only, not needed in production): `transport` (an httpx async
    transport, e.g. `httpx.MockTransport`), `clock` (see `ingest_client.Clock`), `random`
    (the jitter source, `[0, 1)`), `new_event_id` (the `_event_id` generator).
    """

    def __init__(
        self,
        *,
        base_url: str,
        project: str,
        datasource: str,
        token: str,
        max_batch_items: int = 100,
        max_batch_bytes: int = 1_048_576,
        flush_interval: float = 1.0,
        max_queue_items: int = 10_000,
        overflow: Overflow = "block",
        max_in_flight: int = 4,
        gzip: bool = False,
        sync: bool = False,
        request_timeout: float | None = None,
        retry_initial_backoff: float = 0.2,
        retry_max_backoff: float = 30.0,
        retry_deadline: float = 120.0,
        on_delivery: Callable[[Outcome], object] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
        new_event_id: Callable[[], object] | None = None,
    ) -> None:
        self._config = Config(
            base_url=base_url,
            project=project,
            datasource=datasource,
            token=token,
            max_batch_items=max_batch_items,
            max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval,
            max_queue_items=max_queue_items,
            overflow=overflow,
            max_in_flight=max_in_flight,
            gzip=gzip,
            sync=sync,
            request_timeout=request_timeout,
            retry_initial_backoff=retry_initial_backoff,
            retry_max_backoff=retry_max_backoff,
            retry_deadline=retry_deadline,
            on_delivery=on_delivery,
        )
        self._counters = Counters()
        self._intake = Intake(
            self._config,
            self._counters,
            new_event_id=new_event_id if new_event_id is not None else uuid7,
        )
        self._engine = Engine(
            self._config,
            self._intake,
            self._counters,
            clock=clock if clock is not None else SystemClock(),
            random=random if random is not None else _random.random,
            transport=transport,
        )
        self._start()

    def _start(self) -> None:
        """Called at the end of `__init__`: what the subclass needs running."""

    @property
    def config(self) -> Config:
        """The options in force."""
        return self._config

    def stats(self) -> Stats:
        """A snapshot of the counters (docs/clients.md, "Counters and logs")."""
        return self._counters.snapshot()
