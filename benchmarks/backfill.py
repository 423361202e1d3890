"""Benchmark: a 365-day single-run backfill of every market asset against the simulator.

3 coins x 3 exchanges at the Professional rate (1200 requests/min). The simulator runs as its
own process (as in the demo, one per backfill so each starts with a fresh rate window), the
backfill as one Dagster run in this process, with Dagster's instance storage on SQLite and on a
throwaway PostgreSQL server (fsync on, as in production) that the benchmark starts and stops.

Printed per store: HTTP requests made vs the theoretical minimum (ceil(bars/1000) per series),
429s received, the time the run kept the API busy (first to last request, as the simulator saw
them), the floor set by the rate limit (requests / rate), and the whole run's wall time (run
creation to run end, as `materialize` returns) as a ratio to the floor, with the events Dagster
recorded. A run records one planned and one materialization event per (asset, day), 2,555 each
here, a planned row per (check, asset, day) and one check evaluation per (check, asset): beyond
the API time, the whole run is mostly what it costs to store them. `--baseline` also runs each
store with Dagster's stock event log storage (one commit per event) in the same process, so the
ratio is against a baseline of the same run.
Targets: requests = minimum, zero 429, API time <= 1.15 x floor, whole run <= 1.3 x floor.

    .venv/bin/python benchmarks/backfill.py [--days 365] [--stores sqlite,postgres]
        [--baseline] [--repeat 1] [--profile DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import dagster as dg
import duckdb

from cg_assets.definitions import build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.market.fetch import minimum_requests, plan_requests
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.partitions import to_ms
from cg_assets.settings import Settings
from cg_assets.storage.event_log import (
    BATCH_SIZE_VARIABLE,
    postgres_instance_config,
    sqlite_instance_config,
)

# The throwaway PostgreSQL server is the tests' harness (the repository root is not on the path
# of a script run from benchmarks/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cg_assets_tests.postgres_harness import fresh_database, running_postgres

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


def start_simulator(port: int) -> tuple[subprocess.Popen, str]:
    """The simulator on `port` (0: any free port) and its base URL."""
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
    url = sim.stdout.readline().strip()  # the simulator prints its URL once it is serving
    if not url:
        sim.wait()
        raise RuntimeError(f"the simulator did not start on port {port}")
    return sim, url


@dataclass
class Outcome:
    store: str
    storage: str
    requests: int
    history: int
    minimum: int
    limited: int
    api_time: float
    wall: float
    events: dict[str, int]
    rows: int
    success: bool

    @property
    def floor(self) -> float:
        return self.requests / RATE * 60


def instance_overrides(store: str, batched: bool, dsn: str | None, home: Path) -> dict:
    """Dagster instance config: the project's batching event log, or Dagster's stock one."""
    if store == "sqlite":
        if batched:
            return sqlite_instance_config(str(home))
        return {}  # Dagster's default: SqliteEventLogStorage under DAGSTER_HOME
    config = postgres_instance_config(
        str(dsn).replace("postgresql://", "postgresql+psycopg2://", 1)
    )
    if not batched:
        config["event_log_storage"] |= {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
        }
    return config


def backfill(
    days: int, port: int, store: str, batched: bool, dsn: str | None, profile: Path | None
) -> Outcome:
    """One backfill run of `days` days on a fresh lake, simulator and instance."""
    # The batching storage sets it as it is built; Dagster's default is no batches.
    os.environ.pop(BATCH_SIZE_VARIABLE, None)
    sim, base_url = start_simulator(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            today = datetime.now(UTC).date()
            first, last = today - timedelta(days=days), today - timedelta(days=1)
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
            home = Path(tmp) / "dagster_home"
            home.mkdir()
            overrides = instance_overrides(store, batched, dsn, home)
            assets = [build_market_assets(settings)]
            resources = build_resources(settings)
            with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
                sim_admin(base_url, "stats/reset", "POST")
                profiler = cProfile.Profile() if profile else None
                started = time.perf_counter()
                if profiler:
                    profiler.enable()
                result = dg.materialize(
                    assets,
                    resources=resources,
                    instance=instance,
                    tags={
                        "dagster/asset_partition_range_start": first.isoformat(),
                        "dagster/asset_partition_range_end": last.isoformat(),
                    },
                )
                wall = time.perf_counter() - started
                if profiler:
                    profiler.disable()
                    name = f"{store}-{'batched' if batched else 'stock'}.prof"
                    profiler.dump_stats(str(profile / name))
                events = Counter(
                    e.event_type_value
                    for e in result.all_events
                    if e.event_type_value.startswith("ASSET")
                )
                stats = sim_admin(base_url, "stats")
                rows = lake_rows(settings.data_dir)
    finally:
        sim.terminate()
        sim.wait()
    return Outcome(
        store=store,
        storage="batched" if batched else "stock",
        requests=stats["requests"],
        history=stats["requests"] - 1,  # the one supported-exchange-pairs lookup
        minimum=minimum,
        limited=stats["rate_limited"],
        api_time=stats["last_at"] - stats["first_at"],
        wall=wall,
        events=dict(events),
        rows=rows,
        success=result.success,
    )


def report(o: Outcome) -> None:
    print(
        f"{o.store:8} {o.storage:7} requests {o.requests} (minimum {o.minimum} + 1)"
        f"  429s {o.limited}  floor {o.floor:.1f} s  API {o.api_time:.1f} s"
        f" = {o.api_time / o.floor:.3f}x  whole run {o.wall:.1f} s = {o.wall / o.floor:.3f}x"
        f"  rows {o.rows:,}",
        flush=True,
    )


def spread(values: list[float]) -> str:
    return f"median {median(values):.3f}x (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--port", type=int, default=0, help="the simulator's (0: any free)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--baseline", action="store_true", help="also run Dagster's stock storage")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of each run here")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    stores = args.stores.split(",")
    storages = ["stock", "batched"] if args.baseline else ["batched"]
    outcomes: list[Outcome] = []
    with ExitStack() as stack:
        server = stack.enter_context(running_postgres(fsync=True)) if "postgres" in stores else None
        for _ in range(args.repeat):
            for store in stores:
                for storage in storages:
                    with ExitStack() as run:
                        dsn = run.enter_context(fresh_database(server)) if server else None
                        outcome = backfill(
                            args.days, args.port, store, storage == "batched", dsn, args.profile
                        )
                    report(outcome)
                    outcomes.append(outcome)

    print(f"\nbackfill {args.days} days x 60 series (3x3), 1h bars, one run each, {args.repeat}x")
    ok = True
    for store in stores:
        for storage in storages:
            runs = [o for o in outcomes if o.store == store and o.storage == storage]
            last = runs[-1]
            print(f"{store} / {storage} event log storage, {len(runs)} run(s):")
            print(
                f"  requests     {last.requests} = {last.history} history + 1;"
                f" minimum {last.minimum}"
            )
            print(f"  429s         {sum(o.limited for o in runs)}")
            print(f"  rate floor   {last.floor:.1f} s ({last.requests} requests / {RATE} per min)")
            print(f"  API time     {spread([o.api_time / o.floor for o in runs])} of the floor")
            print(f"  whole run    {spread([o.wall / o.floor for o in runs])} of the floor")
            print(f"  events       {last.events}")
            if storage == "batched":
                ok &= all(o.success and o.history == o.minimum and o.limited == 0 for o in runs)
                ok &= median([o.api_time / o.floor for o in runs]) <= 1.15
                ok &= median([o.wall / o.floor for o in runs]) <= 1.3
        if len(storages) == 2:
            stock = median([o.wall for o in outcomes if o.store == store and o.storage == "stock"])
            batched = median(
                [o.wall for o in outcomes if o.store == store and o.storage == "batched"]
            )
            print(f"  {store}: whole run stock / batched = {stock / batched:.2f}x (same process)")
    print("targets        " + ("met" if ok else "NOT met") + " (requests, 429s, API, whole run)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    main()
