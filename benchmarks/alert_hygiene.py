"""Benchmark: what the all clears and the daily cap add to one `telegram_alerts` evaluation.

A lake of `--days` days of hourly bars for three coins, funding swinging through its HIGH cut
so that HIGH episodes begin and end, and a ledger holding a sent digest for every bar with a
signal (a year of them with `--days 365`, so the ledger reads are measured at the size a
year of operation leaves). Measured per evaluation, the median of `--repeat` rounds:

- baseline: the digest's own read of the newest bars (`assets.read_evaluations`), which every
  evaluation did before;
- all clears: reading 7 days of bars and signals, finding the ended episodes, and the reply
  targets in the ledger of those that ended within the last 3 bars (`allclear.read_ended` +
  `allclear.due`); and, as a worst case, of every episode of the week;
- daily cap: the ledger read that counts a coin's digests of the day, per coin.

Printed: each median and its ratio to the baseline. The ledger lives in /dev/shm when there
is one, so filling it does not wait for a disk's fsyncs; the reads are what is measured.

    .venv/bin/python benchmarks/alert_hygiene.py [--days 30] [--repeat 7]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from cg_assets.alerts import allclear
from cg_assets.alerts.assets import read_evaluations
from cg_assets.alerts.hygiene import day_start, digests_counted
from cg_assets.alerts.keys import digest_key
from cg_assets.partitions import days_between
from cg_assets.signals.engine import SCHEMA as SIGNALS_SCHEMA
from cg_assets.signals.snapshot import SCHEMA as SNAPSHOT_SCHEMA
from cg_assets.storage import Lake
from cg_assets.telegram.ledger import AlertLedger, SignalRef

COINS = ("BTC", "ETH", "SOL")
HOUR = timedelta(hours=1)
NOW = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
WINDOW = 3 * HOUR  # stale_after_bars (2) + 1 bars: how old an episode's end may be


def funding_at(coin: int, hour: int) -> float:
    """Funding swinging between -0.02 % and +0.14 % over about a day, per coin in its phase."""
    return 0.06 + 0.08 * math.sin(hour / 4.0 + coin)


def build(root: Path, ledger_dir: Path, days: int) -> tuple[Lake, AlertLedger]:
    lake = Lake(root)
    ledger = AlertLedger(ledger_dir / "ledger.sqlite3", clock=NOW.timestamp)
    start = NOW - timedelta(days=days)
    by_day: dict = {}
    for hour in range(days * 24):
        ts = start + hour * HOUR
        for c, coin in enumerate(COINS):
            value = funding_at(c, hour)
            snapshot = {name: None for name in SNAPSHOT_SCHEMA.names}
            snapshot.update(
                ts=ts, symbol=coin, funding_avg_8h_pct=value, absent_inputs=[], missing="{}"
            )
            day = by_day.setdefault(ts.date(), ([], []))
            day[0].append(snapshot)
            level = "HIGH" if value > 0.10 else "MEDIUM" if value > 0.06 else None
            if level is None:
                continue
            evidence = {"metric": "funding", "value": value, "cuts": {"HIGH": 0.10}}
            day[1].append(
                {
                    "ts": ts,
                    "symbol": coin,
                    "rule": "funding",
                    "level": level,
                    "title": f"Funding {value:+.4f}%",
                    "evidence": json.dumps(evidence),
                    "signal_id": f"{coin}{hour}",
                }
            )
            ledger.clock = lambda t=ts: (t + HOUR).timestamp()
            claim = ledger.claim(digest_key(coin, ts), coin, [SignalRef("funding", level)], "1")
            if claim.granted and ledger.mark_sending(claim, "digest"):
                ledger.mark_sent(claim, message_id=hour * 10 + c, attempts=1)
    for day, (snapshots, signals) in by_day.items():
        lake.write_day("market_snapshot", day, pa.Table.from_pylist(snapshots, SNAPSHOT_SCHEMA))
        lake.write_day("signals", day, pa.Table.from_pylist(signals, SIGNALS_SCHEMA))
    ledger.clock = NOW.timestamp
    return lake, ledger


def median_s(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(prefix="cg-hygiene-") as root,
        tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as ledger_dir,
    ):
        started = time.perf_counter()
        lake, ledger = build(Path(root), Path(ledger_dir), args.days)
        rows = len(ledger.records())
        print(
            f"{args.days} days x {len(COINS)} coins, {rows} ledger rows, built in"
            f" {time.perf_counter() - started:.0f} s"
        )
        recent = days_between(NOW - timedelta(days=2), NOW + timedelta(days=1))
        lookback = NOW - allclear.LOOKBACK
        week = days_between(lookback, NOW + timedelta(days=1))

        def baseline() -> object:
            with duckdb.connect() as con:
                return read_evaluations(con, lake, COINS, recent)

        def all_clears(window: timedelta = WINDOW) -> list:
            with duckdb.connect() as con:
                ended = allclear.read_ended(con, lake, COINS, week, lookback, HOUR)
            return allclear.due(ended, ledger, NOW, window)

        def daily_cap() -> object:
            since = (day_start(NOW) - timedelta(days=1)).timestamp()
            return [
                digests_counted(ledger.records(coin=coin, since=since), coin, "") for coin in COINS
            ]

        base = median_s(baseline, args.repeat)
        print(f"baseline (newest bars)      {base * 1000:7.1f} ms")
        week_all = functools.partial(all_clears, allclear.LOOKBACK)
        for name, work in (
            ("all clears", all_clears),
            ("all clears, every episode", week_all),
            ("daily cap", daily_cap),
        ):
            took = median_s(work, args.repeat)
            print(f"{name:<27} {took * 1000:7.1f} ms  ({took / base:.2f}x the baseline)")
        print(
            f"episodes due an all clear: {len(all_clears())} within {WINDOW}, as an evaluation"
            f" sends them; {len(week_all())} in the week, each looked up in the ledger"
        )


if __name__ == "__main__":
    main()
