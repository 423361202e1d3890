"""Fixtures for the CoinGlass client tests: fake clocks, a scripted HTTP stub, the simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from cg_assets.coinglass import CoinGlassClient, RateLimiter
from cg_assets.sim import SimulatorServer, SyntheticMarket

from .clocks import FakeClock, VirtualClock

# Looks like a real key, so a leak would be found by a plain substring search.
API_KEY = "cgk-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"

# Far above anything a test sends, so only the rate-limit tests are paced.
UNTHROTTLED = 100_000

MakeClient = Callable[..., CoinGlassClient]
StartSim = Callable[..., SimulatorServer]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Clients with millisecond backoff and their own unthrottled limiter, closed afterwards.

    The private limiter keeps tests independent of the process-wide registry.
    """
    clients: list[CoinGlassClient] = []

    def make(
        base_url: str, api_key: str | None = API_KEY, plan: str = "professional", **kw: Any
    ) -> CoinGlassClient:
        kw.setdefault("backoff_base_s", 0.001)
        kw.setdefault("backoff_cap_s", 0.005)
        kw.setdefault("limiter", RateLimiter(UNTHROTTLED, 1.0))
        client = CoinGlassClient(base_url, api_key, plan, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def cg_market() -> SyntheticMarket:
    return SyntheticMarket(seed=7)


@pytest.fixture
def start_sim(cg_market: SyntheticMarket) -> Iterator[StartSim]:
    """Start simulators (unthrottled, no key required unless asked); all stop afterwards."""
    with ExitStack() as stack:

        def start(**kw: Any) -> SimulatorServer:
            kw.setdefault("plan", "professional")
            kw.setdefault("require_key", False)
            kw.setdefault("rate_limit_per_min", UNTHROTTLED)
            return stack.enter_context(SimulatorServer(cg_market, **kw))

        yield start


@pytest.fixture
def sim(start_sim: StartSim) -> SimulatorServer:
    return start_sim()
