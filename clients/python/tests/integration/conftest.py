"""The client harness (docs/clients.md, "The client harness's control API").

`scripts/test.sh` starts `client-harness` and sets INGEST_HARNESS_URL; without it these
tests are skipped. Each test gets a tenant (project, datasource `web`, token) of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

HARNESS_ENV = "INGEST_HARNESS_URL"
T = TypeVar("T")


@dataclass
class Tenant:
    control: httpx.Client
    base_url: str
    project: str
    datasource: str
    token: str

    def options(self, **extra: Any) -> dict[str, Any]:
        """Client options for this tenant."""
        return {
            "base_url": self.base_url,
            "project": self.project,
            "datasource": self.datasource,
            "token": self.token,
            **extra,
        }

    def events(self) -> list[dict[str, Any]]:
        """Every stored event: `[{"event_id", "user_id", "copies"}]`."""
        response = self.control.get(f"/tenants/{self.project}/events")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def contacts(self) -> dict[str, dict[str, Any]]:
        """Every stored contact: user_id -> attributes."""
        response = self.control.get(f"/tenants/{self.project}/contacts")
        response.raise_for_status()
        return {c["user_id"]: c["attributes"] for c in response.json()}

    def set_limit(self, endpoint: str, requests_per_minute: int) -> None:
        response = self.control.put(
            f"/tenants/{self.project}/limits/{endpoint}",
            json={"requests_per_minute": requests_per_minute},
        )
        assert response.status_code == 204, response.text

    def rate_limit_reset(self) -> float:
        """The datasource's current rate-limit window end (Unix seconds), from `GET /stream`."""
        url = f"{self.base_url}/v1/project/{self.project}/datasource/{self.datasource}/stream"
        response = httpx.get(url, headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()
        return float(response.headers["x-ratelimit-reset"])

    def kafka(self, action: str) -> None:
        response = self.control.post(f"/kafka/{action}", timeout=60)
        assert response.status_code == 204, response.text


def wait_until(read: Callable[[], T], done: Callable[[T], bool], *, timeout: float = 45.0) -> T:
    """Poll `read()` until `done(value)`, at most `timeout` seconds; return the last value.

    For state that settles asynchronously (the worker storing what the gateway accepted):
    the test then asserts on the value, so a timeout shows what was there.
    """
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


@pytest.fixture(scope="session")
def control() -> Iterator[httpx.Client]:
    url = os.environ.get(HARNESS_ENV)
    if not url:
        pytest.skip(
            f"{HARNESS_ENV} is not set: these tests need the client harness "
            "(scripts/test.sh starts it; by hand, run ingest-testkit's client-harness "
            "and export the HARNESS_URL=... line it prints)"
        )
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
def tenant(control: httpx.Client) -> Tenant:
    response = control.post("/tenants")
    response.raise_for_status()
    body = response.json()
    return Tenant(
        control=control,
        base_url=body["base_url"],
        project=body["project"],
        datasource=body["datasource"],
        token=body["token"],
    )
