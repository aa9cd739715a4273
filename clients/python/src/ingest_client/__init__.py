"""Client library for the ingest pipeline.

`Client` (threads) and `AsyncClient` (asyncio) batch events and contact writes, retry
what is safe to retry, and report one `Outcome` per item. The behaviour is shared with
the Rust and TypeScript clients: see docs/clients.md in the repository.
"""

from ingest_client._async_client import AsyncClient
from ingest_client._clock import Clock, SystemClock
from ingest_client._config import Config, Overflow
from ingest_client._outcomes import Kind, Outcome, Stats, Status
from ingest_client._sync_client import Client
from ingest_client._uuid7 import uuid7
from ingest_client._version import __version__

__all__ = [
    "AsyncClient",
    "Client",
    "Clock",
    "Config",
    "Kind",
    "Outcome",
    "Overflow",
    "Stats",
    "Status",
    "SystemClock",
    "__version__",
    "uuid7",
]
