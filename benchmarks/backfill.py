"""Benchmark: a 365-day single-run backfill of every market asset against the simulator.

3 coins x 3 exchanges at the Professional rate (1200 requests/min). The simulator runs as its
own process (as in the demo), the backfill as one Dagster run in this process. Printed:
HTTP requests made vs the theoretical minimum (ceil(bars/1000) per series), 429s received,
the time the run kept the API busy (first to last request, as the simulator saw them) vs the
floor set by the rate limit (requests / rate), the whole run's wall time, and rows written per
second. Targets: requests = minimum, zero 429, API time <= 1.15 x floor.

The whole run takes longer than the API time: Dagster records one materialization event per
(asset, day), 2,555 here, at about 20 ms each on its default SQLite storage, and the benchmark
prints that share separately rather than hiding it.

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
import duckdb

from cg_assets.definitions import build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.market.fetch import minimum_requests, plan_requests
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.partitions import to_ms
from cg_assets.settings import Settings

RATE = 1200


def sim_admin(base_url: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(f"{base_url}/_sim/{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def lake_rows(data_dir: Path) -> int:
    con = duckdb.connect()
    try:
        [(rows,)] = con.execute(
            "SELECT count(*) FROM read_parquet($glob, union_by_name = true)",
            {"glob": str(data_dir / "lake" / "*" / "*" / "*.parquet")},
        ).fetchall()
    finally:
        con.close()
    return rows


def start_simulator(port: int) -> subprocess.Popen:
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_assets.sim.cli",
            "--ws-port",
            "0",
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
            sim_admin(base_url, "stats/reset", "POST")
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
            stats = sim_admin(base_url, "stats")
            rows = lake_rows(settings.data_dir)
            events = len(result.get_asset_materialization_events())
    finally:
        sim.terminate()
        sim.wait()

    requests = stats["requests"]
    history = requests - 1  # the one supported-exchange-pairs lookup
    limited = stats["rate_limited"]
    api_time = stats["last_at"] - stats["first_at"]
    floor = requests / RATE * 60
    print(f"backfill       {args.days} days x {series} series (3x3), 1h bars, one run")
    print(f"requests       {requests} = {history} history + 1 exchange-pairs; minimum {minimum}")
    print(f"429s           {limited}")
    print(f"rate floor     {floor:.1f} s ({requests} requests / {RATE} per min)")
    print(f"API time       {api_time:.1f} s first to last request = {api_time / floor:.3f} x floor")
    print(f"run wall time  {wall:.1f} s = {wall / floor:.3f} x floor, incl. {events} events")
    print(f"rows written   {rows:,} ({rows / wall:,.0f} rows/s over the whole run)")
    ok = history == minimum and limited == 0 and api_time <= 1.15 * floor and result.success
    print("targets        " + ("met" if ok else "NOT met") + " (requests, 429s, API time)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    main()
