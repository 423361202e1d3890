"""Fixtures for the simulator's own tests: a fixed clock, so ranges and rate windows are exact,
and WebSocket helpers (plain asyncio.run in sync tests, no plugin needed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cg_assets.sim import LiquidationFeed, SimulatorServer, SyntheticMarket, WsSimulator

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


class RealTimeClock:
    """Milliseconds that advance with real time from a fixed start: the WebSocket server
    needs time to pass, while a start near the test market's epoch keeps generation cheap."""

    def __init__(self, start: int) -> None:
        self.start = start
        self._t0 = time.monotonic_ns()

    def __call__(self) -> int:
        return self.start + (time.monotonic_ns() - self._t0) // 1_000_000


@pytest.fixture
def live_feed(sim_market: SyntheticMarket) -> LiquidationFeed:
    """A feed on a real-time clock, at a rate that fills a push or two per tick."""
    return LiquidationFeed(sim_market, rate_per_s=200, clock=RealTimeClock(NOW_MS))


@pytest.fixture
def ws_sim(live_feed: LiquidationFeed) -> Iterator[WsSimulator]:
    with WsSimulator(live_feed, require_key=False) as sim:
        yield sim


class WsClient:
    """One websockets connection with the steps the WebSocket tests repeat; every wait is
    bounded so a broken server fails the test instead of hanging it."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def send_json(self, payload: Any) -> None:
        await self.conn.send(json.dumps(payload))

    async def subscribe(self, *channels: str) -> None:
        await self.send_json({"method": "subscribe", "channels": list(channels)})

    async def unsubscribe(self, *channels: str) -> None:
        await self.send_json({"method": "unsubscribe", "channels": list(channels)})

    async def recv(self, timeout: float = 5.0) -> str:
        async with asyncio.timeout(timeout):
            message = await self.conn.recv()
        assert isinstance(message, str)
        return message

    async def push(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next push frame, skipping pongs."""
        while (message := await self.recv(timeout)) == "pong":
            pass
        return json.loads(message)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Read until the server closes the connection; the (code, reason) it closed with."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.conn.recv()
        return self.conn.close_code, self.conn.close_reason

    async def pong(self, timeout: float = 5.0) -> list[str]:
        """Wait for the next pong; returns the frames that arrived before it."""
        before = []
        while (message := await self.recv(timeout)) != "pong":
            before.append(message)
        return before


def ws_connect(url: str, key: str | None = None) -> Any:
    """`async with ws_connect(url) as client:` — a WsClient, compression off like the server."""
    target = url if key is None else f"{url}?cg-api-key={key}"

    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[WsClient]:
        async with connect(target, compression=None, open_timeout=5, close_timeout=2) as conn:
            yield WsClient(conn)

    return session()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Await a condition on the server's side (its stats or feed), polling briefly."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
