"""Four backfill runs at once keep to one API key's rate: the schedule they share
(`cg_assets.coinglass.slots`) in a SQLite file and in PostgreSQL.

Each run is its own `dagster asset materialize` process (the market assets, one day of 1-minute
bars each) against the REST simulator at the Standard plan's 300 requests per minute, the same
key for all. The four together need more requests than one minute allows: the simulator
counts 429s and records when each request came, from which the busiest 60 s window is
measured.

Those two figures alone do not show that the runs share a schedule: runs pacing themselves
apart also stay under them (measured: 0 429s, 277-281 in the busiest minute), because each
slows down once the usage headers near the limit, but only after the window has filled,
together and at up to four times the plan's pace. So the test also bounds the busiest 30 s
window by half the minute's budget, which only one shared, evenly spaced schedule keeps (runs
apart sent 277 requests within 20 s, 831/min; shared, 96 within 20 s). The margin, 7 of the
143 slots in 30 s at 95 % of the rate, absorbs a second of late requests on a loaded machine.
The rate is the plan's, on the wall clock: nothing is scaled, so each case runs for a little
over a minute.
"""

from __future__ import annotations

import bisect
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cg_assets.coinglass.plans import PLAN_LIMITS, Plan
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.sim import SimulatorServer, SyntheticMarket

KEY = "parallel-backfill-key"
RUNS = 4
WINDOW_S = 60.0
BURST_WINDOW_S = 30.0
LIMIT = PLAN_LIMITS[Plan.STANDARD].requests_per_minute


def busiest_window(times: list[float], window_s: float) -> int:
    """The most requests in any window (t - window_s, t] ending at a request (the simulator's
    own sliding window)."""
    ordered = sorted(times)
    return max(
        (i + 1 - bisect.bisect_right(ordered, t - window_s) for i, t in enumerate(ordered)),
        default=0,
    )


def test_busiest_window():
    assert busiest_window([0.0, 1.0, 60.0, 60.5, 130.0], 60.0) == 3  # (0.5, 60.5]: 1, 60, 60.5
    assert busiest_window([], 60.0) == 0


@pytest.fixture
def standard_sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SyntheticMarket(seed=5), keys={KEY: "standard"}) as server:
        yield server


def day_of(params: dict[str, str]) -> date | None:
    start = params.get("start_time")
    return datetime.fromtimestamp(int(start) / 1000, UTC).date() if start else None


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["sqlite", "postgresql"])
def test_four_parallel_backfills_share_one_rate_budget(
    schedule: str, standard_sim: SimulatorServer, tmp_path: Path, request: pytest.FixtureRequest
):
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(1, RUNS + 1)]  # within 1m bars' 6 days
    env = {
        **os.environ,
        "CG_API_BASE_URL": standard_sim.base_url,
        "CG_API_KEY": KEY,
        "CG_PLAN": "standard",
        "CG_SYMBOLS": "BTC,ETH",
        "CG_EXCHANGES": "Binance,OKX,Bybit",
        "CG_INTERVAL": "1m",
        "CG_START_DATE": days[-1].isoformat(),
        "CG_DATA_DIR": str(tmp_path / "data"),
        "CG_SIDECAR": "off",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    env.pop("CG_RATE_LIMIT_PER_MIN", None)
    env.pop("CG_STATE_DSN", None)
    if schedule == "postgresql":
        env["CG_STATE_DSN"] = request.getfixturevalue("postgres_dsn")
    Path(env["DAGSTER_HOME"]).mkdir()
    # One instance shared by the runs, as on a desk: created before they race to create it.
    dg.DagsterInstance.from_config(env["DAGSTER_HOME"]).dispose()
    select = ",".join(asset.name for asset in MARKET_ASSETS)
    runs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "dagster", "asset", "materialize"),
                *("-m", "cg_assets.definitions", "--select", select),
                *("--partition", day.isoformat()),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for day in days
    ]
    started = time.monotonic()
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    wall = time.monotonic() - started
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-4000:]

    stats = standard_sim.stats
    times, log = list(stats.times), list(stats.log)
    busiest = busiest_window(times, WINDOW_S)
    burst = busiest_window(times, BURST_WINDOW_S)
    span = max(times) - min(times)
    spans = {
        day: [t for t, (_, params) in zip(times, log, strict=True) if day_of(params) == day]
        for day in days
    }
    overlap = min(max(s) for s in spans.values()) - max(min(s) for s in spans.values())
    print(
        f"\n{schedule} schedule: {RUNS} runs, {stats.requests} requests in {span:.1f} s"
        f" ({wall:.1f} s wall), 429s: {stats.rate_limited}"
        f"\nbusiest {WINDOW_S:.0f} s window: {busiest} requests = {busiest / WINDOW_S * 60:.0f}"
        f" requests/min aggregate vs the Standard plan's {LIMIT}/min;"
        f" mean {stats.requests / span * 60:.0f}/min; all {RUNS} runs requesting together"
        f" for {overlap:.1f} s"
        f"\nbusiest {BURST_WINDOW_S:.0f} s window: {burst} requests"
        f" = {burst / BURST_WINDOW_S * 60:.0f}/min"
    )
    # Meaningful only if the runs overlapped and needed more than one window's budget.
    assert stats.requests > LIMIT
    assert overlap > WINDOW_S / 2
    assert all(spans.values())
    assert span > WINDOW_S
    assert stats.rate_limited == 0
    assert busiest <= LIMIT
    assert burst <= LIMIT * BURST_WINDOW_S / WINDOW_S
