"""Fixtures for the simulator's own tests: a fixed clock, so ranges and rate windows are exact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from cg_assets.sim import SimulatorServer, SyntheticMarket

# A short listing history keeps generation cheap; "now" is deliberately mid-minute and mid-bar.
EPOCH_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
NOW_MS = int(datetime(2026, 3, 1, 12, 34, 56, 789_000, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000


class Clock:
    """A settable millisecond clock, so tests move time instead of sleeping."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Api:
    """requests against one server, with the key header and envelope checks tests repeat."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.session = requests.Session()

    def get(self, path: str, key: str | None = None, **params: Any) -> requests.Response:
        headers = {"CG-API-KEY": key} if key is not None else {}
        return self.session.get(self.server.base_url + path, params=params, headers=headers)

    def body(self, path: str, key: str | None = None, **params: Any) -> dict[str, Any]:
        response = self.get(path, key, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def data(self, path: str, key: str | None = None, **params: Any) -> Any:
        body = self.body(path, key, **params)
        assert body["code"] == "0", body
        return body["data"]


@pytest.fixture(scope="session")
def sim_market() -> SyntheticMarket:
    return SyntheticMarket(seed=7, epoch_ms=EPOCH_MS)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW_MS)


@pytest.fixture
def server(sim_market: SyntheticMarket, clock: Clock) -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_market, require_key=False, clock=clock) as srv:
        yield srv


@pytest.fixture
def api(server: SimulatorServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.session.close()


@pytest.fixture
def make_api(sim_market: SyntheticMarket, clock: Clock) -> Iterator[Any]:
    """Factory for servers with non-default options; all are stopped at teardown."""
    started: list[tuple[SimulatorServer, Api]] = []

    def make(**options: Any) -> Api:
        srv = SimulatorServer(sim_market, clock=clock, **options).start()
        client = Api(srv)
        started.append((srv, client))
        return client

    yield make
    for srv, client in started:
        client.session.close()
        srv.stop()
