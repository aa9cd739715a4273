from __future__ import annotations

import pytest

from tests.unit.fakes import FakeClock, FakeGateway, Harness


@pytest.fixture
def harness() -> Harness:
    clock = FakeClock()
    return Harness(clock=clock, gateway=FakeGateway(clock))
