"""Benchmark: a 365-day single-run backfill of every market asset against the simulator.

3 coins x 3 exchanges at the Professional rate (1200 requests/min). The simulator runs as its
own process (as in the demo), the backfill as one Dagster run in this process. Printed:
HTTP requests made vs the theoretical minimum (ceil(bars/1000) per series), 429s received,
wall time vs the floor set by the rate limit (requests / rate), and rows written per second.
Targets: requests = minimum, zero 429, wall time <= 1.15 x floor.

    .venv/bin/python benchmarks/backfill.py [--days 365]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from cg_assets.definitions import build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.market.fetch import minimum_requests, plan_requests
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.partitions import to_ms
from cg_assets.settings import Settings

RATE = 1200


def sim_stats(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/_sim/stats", timeout=10) as response:
        return json.load(response)


def start_simulator(port: int) -> subprocess.Popen:
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_assets.sim.cli",
            "--port",
            str(port),
            "--plan",
            "professional",
            "--no-require-key",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sim.stdout.readline()  # the simulator prints its URL once it is serving
    return sim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()

    base_url = f"http://127.0.0.1:{args.port}"
    sim = start_simulator(args.port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            today = datetime.now(UTC).date()
            first, last = today - timedelta(days=args.days), today - timedelta(days=1)
            settings = Settings.from_env(
                {
                    "CG_API_BASE_URL": base_url,
                    "CG_PLAN": "professional",
                    "CG_SYMBOLS": "BTC,ETH,SOL",
                    "CG_EXCHANGES": "Binance,OKX,Bybit",
                    "CG_INTERVAL": "1h",
                    "CG_START_DATE": first.isoformat(),
                    "CG_DATA_DIR": str(Path(tmp) / "data"),
                }
            )
            series = len(
                plan_requests(
                    MARKET_ASSETS, settings.symbols, settings.exchanges, lambda c, e: c + e
                )
            )
            start_ms = to_ms(datetime.combine(first, datetime.min.time(), UTC))
            end_ms = to_ms(datetime.combine(today, datetime.min.time(), UTC))
            minimum = minimum_requests(series, start_ms, end_ms, settings.interval_ms)
            before = sim_stats(base_url)
            started = time.perf_counter()
            with dg.instance_for_test() as instance:
                result = dg.materialize(
                    [build_market_assets(settings)],
                    resources=build_resources(settings),
                    instance=instance,
                    tags={
                        "dagster/asset_partition_range_start": first.isoformat(),
                        "dagster/asset_partition_range_end": last.isoformat(),
                    },
                )
            wall = time.perf_counter() - started
            after = sim_stats(base_url)
            rows = sum(
                m.materialization.metadata["dagster/row_count"].value
                for m in result.get_asset_materialization_events()
            )
    finally:
        sim.terminate()
        sim.wait()

    requests = after["requests"] - before["requests"]
    history = requests - 1  # the one supported-exchange-pairs lookup
    limited = after["rate_limited"] - before["rate_limited"]
    floor = requests / RATE * 60
    print(
        f"backfill       {args.days} days x {series} series"
        " (3 coins x 3 exchanges), 1h bars, one run"
    )
    print(
        f"requests       {requests} made ({history} history + 1 exchange-pairs);"
        f" minimum {minimum} history"
    )
    print(f"429s           {limited}")
    print(
        f"wall time      {wall:.1f} s; rate-limit floor {floor:.1f} s ({requests} / {RATE} per min)"
    )
    print(f"ratio          {wall / floor:.3f} x floor (target <= 1.15)")
    print(f"rows written   {rows:,} ({rows / wall:,.0f} rows/s)")
    ok = history == minimum and limited == 0 and wall <= 1.15 * floor and result.success
    print("targets        " + ("met" if ok else "NOT met"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    main()
