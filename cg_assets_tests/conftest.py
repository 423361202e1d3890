"""Shared fixtures: an in-process simulator on loopback and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cg_assets.settings import Settings
from cg_assets.sim import SimulatorServer, SyntheticMarket

pytest_plugins = [
    "cg_assets_tests.sidecar_harness",
    "cg_assets_tests.postgres_harness",
    "cg_assets_tests.s3_harness",
]


@pytest.fixture(scope="session")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=11)


@pytest.fixture
def sim(market: SyntheticMarket) -> Iterator[SimulatorServer]:
    with SimulatorServer(market, plan="professional", require_key=False) as server:
        yield server


def days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).date().isoformat()


@pytest.fixture
def env(sim: SimulatorServer, tmp_path: Path) -> dict[str, str]:
    """A small configuration (2 coins x 2 exchanges) against the simulator."""
    return {
        "CG_API_BASE_URL": sim.base_url,
        "CG_DATA_DIR": str(tmp_path / "data"),
        "CG_PLAN": "professional",
        "CG_SYMBOLS": "BTC,ETH",
        "CG_EXCHANGES": "Binance,OKX",
        "CG_INTERVAL": "1h",
        "CG_START_DATE": days_ago(120),
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)
