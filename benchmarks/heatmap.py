"""Benchmark: the liquidation heatmap from 1M and 10M liquidations in Parquet, DuckDB vs pandas.

Each size writes one synthetic day to a temporary lake exactly as the assets find it:
`liquidation_orders` (3 coins, prices along a per-coin random walk, lognormal sizes; the
`event_id` column is left out since nothing here reads it) and `price_ohlc` (1h bars, 3
exchanges, the day before included). Then, in the same run:

- DuckDB: the asset's own code path (`open_inputs` + `heatmap_cells` + `split_unpriced` from
  cg_assets.heatmaps.liquidation): Parquet scan, reference-price ASOF join, one group-by;
- pandas: a straightforward implementation of the same rule (read_parquet, lower median of the
  exchanges' closes, merge_asof on the time bucket's start, groupby).

Both must give the same cells: same keys, reference prices and event counts exactly, USD sums
to 1e-9 relative (float sums depend on summation order). Printed per size: seconds (best of
`--repeat`), events/s, the pandas/DuckDB ratio, and the 10M/1M time ratio of DuckDB (scaling).
Targets on a 2-core machine at 10M: >= 5x faster than pandas, <= 1.5 s, scaling <= 11.

    .venv/bin/python benchmarks/heatmap.py [--sizes 1000000,10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from cg_assets.heatmaps.buckets import EDGE_TOLERANCE
from cg_assets.heatmaps.liquidation import heatmap_cells, open_inputs, split_unpriced
from cg_assets.market.series import MARKET_ASSETS_BY_NAME
from cg_assets.storage import Lake

DAY = date(2026, 3, 2)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
GRID = 0.0025
COINS = {"BTC": 90_000.0, "ETH": 3_000.0, "SOL": 150.0}
EXCHANGES = {"Binance": 1.0, "OKX": 1.0002, "Bybit": 0.9999}
TARGET_RATIO, TARGET_SECONDS, TARGET_SCALING = 5.0, 1.5, 11.0
T = TypeVar("T")
T0 = int(pd.Timestamp(DAY, tz="UTC").timestamp() * 1000)


def write_lake(root: str, events: int, seed: int = 1) -> Lake:
    """One day of `events` liquidations and the price bars around it."""
    rng = np.random.default_rng(seed)
    lake = Lake(root)
    minutes = np.arange(-24 * 60, 24 * 60)
    paths = {
        coin: start * np.exp(np.cumsum(rng.normal(0, 0.0008, len(minutes))))
        for coin, start in COINS.items()
    }
    bars = []
    for coin, path in paths.items():
        for hour in range(-24, 24):
            close = path[(hour + 25) * 60 - 1]
            for exchange, basis in EXCHANGES.items():
                bars.append((T0 + hour * HOUR_MS, coin, exchange, close * basis))
    frame = pd.DataFrame(bars, columns=["ts", "symbol", "exchange", "close"])
    schema = MARKET_ASSETS_BY_NAME["price_ohlc"].schema
    for day, part in (
        (DAY - timedelta(days=1), frame[frame.ts < T0]),
        (DAY, frame[frame.ts >= T0]),
    ):
        table = pa.table(
            {
                "ts": pa.array(part.ts, pa.timestamp("ms", tz="UTC")),
                "symbol": part.symbol,
                "exchange": part.exchange,
                "pair": part.symbol + "USDT",
                "open": part.close,
                "high": part.close * 1.002,
                "low": part.close * 0.998,
                "close": part.close,
                "volume_usd": np.full(len(part), 1e9),
            },
            schema=schema,
        )
        lake.write_day("price_ohlc", day, table)

    coin_index = rng.integers(0, len(COINS), events)
    ts = np.sort(rng.integers(0, DAY_MS, events))
    minute = 24 * 60 + ts // MINUTE_MS
    walk = np.stack(list(paths.values()))
    price = walk[coin_index, minute] * (1 + rng.normal(0, 0.003, events))
    coins = pa.DictionaryArray.from_arrays(pa.array(coin_index, pa.int32()), list(COINS))
    sides = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, 2, events), pa.int32()), ["long", "short"]
    )
    orders = pa.table(
        {
            "ts": pa.array(T0 + ts, pa.timestamp("ms", tz="UTC")),
            "symbol": coins,
            "exchange": pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, 3, events), pa.int32()), list(EXCHANGES)
            ),
            "side": sides,
            "price": price,
            "usd_value": np.round(rng.lognormal(7.8, 1.7, events), 4),
            "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(events, np.int32)), ["ws"]),
        }
    )
    lake.write_day("liquidation_orders", DAY, orders)
    return lake


def duckdb_heatmap(lake: Lake) -> pa.Table:
    con = duckdb.connect()
    open_inputs(con, lake, [DAY], HOUR_MS)
    try:
        rows = heatmap_cells(con, start_ms=T0, end_ms=T0 + DAY_MS, bucket_ms=MINUTE_MS, grid=GRID)
    finally:
        con.close()
    return split_unpriced(rows).cells


def pandas_heatmap(lake: Lake) -> pd.DataFrame:
    """The same cells the obvious pandas way."""
    orders = pd.read_parquet(
        lake.file("liquidation_orders", DAY),
        columns=["ts", "symbol", "side", "price", "usd_value"],
    )
    prices = pd.concat(
        pd.read_parquet(lake.file("price_ohlc", d), columns=["ts", "symbol", "close"])
        for d in (DAY - timedelta(days=1), DAY)
    )
    closes = (
        prices.groupby(["symbol", "ts"], observed=True)["close"]
        .quantile(0.5, interpolation="lower")
        .reset_index()
    )
    closes["close_ms"] = _ms(closes["ts"]) + HOUR_MS
    events = pd.DataFrame(
        {
            "symbol": orders["symbol"].astype(str),
            "t0": _ms(orders["ts"]) // MINUTE_MS * MINUTE_MS,
            "long": orders["side"] == "long",
            "price": orders["price"],
            "usd": orders["usd_value"],
        }
    )
    events = pd.merge_asof(
        events.sort_values("t0"),
        closes[["symbol", "close_ms", "close"]].sort_values("close_ms"),
        left_on="t0",
        right_on="close_ms",
        by="symbol",
    ).dropna(subset=["close"])
    events["bucket"] = np.floor(
        (events["price"] / events["close"] - 1) / GRID + EDGE_TOLERANCE
    ).astype("int64")
    events["long_usd"] = events["usd"].where(events["long"], 0.0)
    events["short_usd"] = events["usd"].where(~events["long"], 0.0)
    cells = (
        events.groupby(["symbol", "t0", "bucket"])
        .agg(
            ref_price=("close", "first"),
            long_usd=("long_usd", "sum"),
            short_usd=("short_usd", "sum"),
            events=("usd", "size"),
        )
        .reset_index()
    )
    cells["total_usd"] = cells["long_usd"] + cells["short_usd"]
    return cells


def _ms(times: pd.Series) -> pd.Series:
    return times.dt.as_unit("ms").astype("int64")


def assert_same(duck: pa.Table, ref: pd.DataFrame) -> None:
    got = duck.to_pandas()
    got["t0"] = _ms(got["ts"])
    got = got.sort_values(["symbol", "t0", "bucket"], ignore_index=True)
    ref = ref.sort_values(["symbol", "t0", "bucket"], ignore_index=True)
    assert len(got) == len(ref), f"{len(got)} cells from DuckDB, {len(ref)} from pandas"
    for column in ("symbol", "t0", "bucket", "events", "ref_price"):
        assert (got[column].to_numpy() == ref[column].to_numpy()).all(), f"{column} differs"
    for column in ("long_usd", "short_usd", "total_usd"):
        np.testing.assert_allclose(got[column], ref[column], rtol=1e-9, err_msg=column)


def best(fn: Callable[[Lake], T], lake: Lake, repeat: int) -> tuple[float, T]:
    """The best time of `repeat` calls of `fn(lake)`, and the last result."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(lake)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    timings: dict[int, tuple[float, float]] = {}
    header = ("events", "cells", "duckdb s", "events/s", "pandas s", "events/s", "ratio")
    print("{:>12} {:>9} {:>9} {:>13} {:>9} {:>13} {:>6}".format(*header))
    for size in sizes:
        with tempfile.TemporaryDirectory() as root:
            lake = write_lake(root, size)
            duckdb_heatmap(lake)  # warm the page cache for both readers
            duck_s, duck = best(duckdb_heatmap, lake, args.repeat)
            pandas_s, ref = best(pandas_heatmap, lake, max(1, args.repeat - 1))
            assert_same(duck, ref)
        timings[size] = (duck_s, pandas_s)
        print(
            f"{size:>12,} {duck.num_rows:>9,} {duck_s:>9.3f} {size / duck_s:>13,.0f}"
            f" {pandas_s:>9.3f} {size / pandas_s:>13,.0f} {pandas_s / duck_s:>5.1f}x"
        )
    print("cells identical (keys, reference prices, counts; USD to 1e-9)")
    largest = max(sizes)
    duck_s, pandas_s = timings[largest]
    ok = duck_s <= TARGET_SECONDS and pandas_s / duck_s >= TARGET_RATIO
    if len(sizes) > 1:
        smallest = min(sizes)
        scaling = duck_s / timings[smallest][0]
        print(
            f"scaling {largest // smallest}x events -> {scaling:.2f}x time"
            f" (target <= {TARGET_SCALING:g})"
        )
        ok = ok and scaling <= TARGET_SCALING
    print(
        f"targets at {largest:,}: <= {TARGET_SECONDS} s and >= {TARGET_RATIO:g}x pandas:"
        f" {'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
