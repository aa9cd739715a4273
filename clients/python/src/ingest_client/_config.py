"""The client's options (docs/clients.md, "Configuration"), validated once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from ingest_client._outcomes import Outcome

Overflow = Literal["block", "drop"]

#: The server's limit on items per request.
SERVER_MAX_BATCH_ITEMS = 100
#: The server's limit on a request body (after decompression).
SERVER_MAX_BODY_BYTES = 1_048_576


@dataclass(frozen=True, slots=True)
class Config:
    base_url: str
    project: str
    datasource: str
    token: str
    max_batch_items: int = 100
    max_batch_bytes: int = SERVER_MAX_BODY_BYTES
    flush_interval: float = 1.0
    max_queue_items: int = 10_000
    overflow: Overflow = "block"
    max_in_flight: int = 4
    gzip: bool = False
    sync: bool = False
    #: None: 10 s, or 15 s when `sync` is on (above the server's 10 s `?_sync` wait).
    request_timeout: float | None = None
    retry_initial_backoff: float = 0.2
    retry_max_backoff: float = 30.0
    retry_deadline: float = 120.0
    on_delivery: Callable[[Outcome], object] | None = None

    def __post_init__(self) -> None:
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {self.base_url!r}")
        for name in ("project", "datasource", "token"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if not 1 <= self.max_batch_items <= SERVER_MAX_BATCH_ITEMS:
            raise ValueError(f"max_batch_items must be 1-{SERVER_MAX_BATCH_ITEMS}")
        if not 3 <= self.max_batch_bytes <= SERVER_MAX_BODY_BYTES:
            raise ValueError(f"max_batch_bytes must be 3-{SERVER_MAX_BODY_BYTES}")
        if self.overflow not in ("block", "drop"):
            raise ValueError("overflow must be 'block' or 'drop'")
        positive_ints = ("max_queue_items", "max_in_flight")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        positive = (
            "flush_interval",
            "retry_initial_backoff",
            "retry_max_backoff",
            "retry_deadline",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.request_timeout is not None and not self.request_timeout > 0:
            raise ValueError("request_timeout must be positive")

    @property
    def effective_request_timeout(self) -> float:
        if self.request_timeout is not None:
            return self.request_timeout
        return 15.0 if self.sync else 10.0

    @property
    def stream_url(self) -> str:
        """`{base_url}/v1/project/{project}/datasource/{datasource}/stream`."""
        base = self.base_url.rstrip("/")
        project = quote(self.project, safe="")
        datasource = quote(self.datasource, safe="")
        return f"{base}/v1/project/{project}/datasource/{datasource}/stream"
