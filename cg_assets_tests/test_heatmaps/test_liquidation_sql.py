"""The heatmap SQL on hand-worked cases, and against a plain-Python reference on random data."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cg_assets.heatmaps.buckets import price_bucket
from cg_assets.heatmaps.liquidation import heatmap_cells, open_inputs, split_unpriced
from cg_assets.storage import Lake
from cg_assets_tests.test_heatmaps.conftest import (
    HOUR,
    MINUTE,
    day_start_ms,
    orders_table,
    prices_table,
)

DAY = date(2026, 3, 2)
T0 = day_start_ms(DAY)


def run(lake: Lake, bucket_minutes: int = 1, grid: float = 0.0025, day: date = DAY):
    con = duckdb.connect()
    open_inputs(con, lake, [day], HOUR)
    try:
        rows = heatmap_cells(
            con,
            start_ms=day_start_ms(day),
            end_ms=day_start_ms(day) + 24 * HOUR,
            bucket_ms=bucket_minutes * MINUTE,
            grid=grid,
        )
    finally:
        con.close()
    return split_unpriced(rows)


@pytest.fixture
def hand_lake(tmp_path: Path) -> Lake:
    """BTC bars: the 23:00 bar before DAY closed at 100 (Binance) and 102 (OKX); the 00:00 bar
    of DAY closed at 110 (Binance). ETH has no bars at all."""
    lake = Lake(tmp_path)
    lake.write_day(
        "price_ohlc",
        DAY - timedelta(days=1),
        prices_table([(T0 - HOUR, "BTC", "Binance", 100.0), (T0 - HOUR, "BTC", "OKX", 102.0)]),
    )
    lake.write_day("price_ohlc", DAY, prices_table([(T0, "BTC", "Binance", 110.0)]))
    lake.write_day(
        "liquidation_orders",
        DAY,
        orders_table(
            [
                (T0 + 30_000, "BTC", "long", 100.0, 1000.0),  # bucket 0 of ref 100
                (T0 + 45_000, "BTC", "short", 100.3, 500.0),  # 0.3% above: bucket 1
                (T0 + 50_000, "BTC", "long", 99.75, 200.0),  # exactly on the edge of -1
                (T0 + 55_000, "BTC", "short", 100.1, 300.0),  # bucket 0 again
                (T0 + 58 * MINUTE + 30_000, "BTC", "long", 110.0, 50.0),  # 00:58: still ref 100
                (T0 + 59 * MINUTE + 10_000, "BTC", "short", 110.0, 70.0),  # 00:59: ref 110
                (T0 + 10_000, "ETH", "long", 3000.0, 999.0),  # no ETH price yet
            ]
        ),
    )
    return lake


def test_hand_worked_cells(hand_lake: Lake):
    cells, unpriced, unpriced_usd = run(hand_lake)
    got = {
        (r["ts"].timestamp() * 1000 - T0, r["symbol"], r["bucket"]): (
            r["ref_price"],
            r["total_usd"],
            r["long_usd"],
            r["short_usd"],
            r["events"],
        )
        for r in cells.to_pylist()
    }
    assert got == {
        (0, "BTC", -1): (100.0, 200.0, 200.0, 0.0, 1),
        (0, "BTC", 0): (100.0, 1300.0, 1000.0, 300.0, 2),
        (0, "BTC", 1): (100.0, 500.0, 0.0, 500.0, 1),
        (58 * MINUTE, "BTC", 40): (100.0, 50.0, 50.0, 0.0, 1),
        (59 * MINUTE, "BTC", 0): (110.0, 70.0, 0.0, 70.0, 1),
    }
    # The minutes 00:01 .. 00:57 had no events and have no cells.
    assert (unpriced, unpriced_usd) == (1, 999.0)


def test_bounds_and_grid_are_stored(hand_lake: Lake):
    cells, _, _ = run(hand_lake)
    row = next(r for r in cells.to_pylist() if r["bucket"] == -1)
    assert row["grid"] == 0.0025
    assert row["price_low"] == pytest.approx(99.75)
    assert row["price_high"] == pytest.approx(100.0)
    assert cells.schema.field("ts").type.unit == "ms"
    assert str(cells.schema.field("ts").type.tz) == "UTC"


def test_an_hour_bucket_takes_the_bar_that_closed_at_its_end(hand_lake: Lake):
    cells, _, _ = run(hand_lake, bucket_minutes=60, grid=0.01)
    by_bucket = {r["bucket"]: r for r in cells.to_pylist()}
    # Bucket end 01:00 = close of the 00:00 bar, so every event is measured from 110.
    assert {r["ref_price"] for r in by_bucket.values()} == {110.0}
    assert by_bucket[0]["events"] == 2  # the two at 110.0
    assert by_bucket[-10]["events"] == 2  # 99.75 and 100.0: 9.1% .. 9.3% below 110
    assert by_bucket[-9]["events"] == 2  # 100.3, and 100.1 = 110 * 0.91 on the edge of -9
    assert sum(r["events"] for r in by_bucket.values()) == 6


def test_no_events_means_no_cells(tmp_path: Path):
    lake = Lake(tmp_path)
    lake.write_day("price_ohlc", DAY, prices_table([(T0, "BTC", "Binance", 110.0)]))
    cells, unpriced, _ = run(lake)
    assert cells.num_rows == 0
    assert unpriced == 0


# ----------------------------------------------------------------------- reference on random data


def reference(orders, bars, *, bucket_ms: int, grid: float, interval_ms: int):
    """The heatmap by hand: loops and dicts, the rule read straight from the docstring."""
    closes = defaultdict(list)
    for ts, symbol, _exchange, close in bars:
        closes[symbol, ts].append(close)
    cells: dict = {}
    unpriced = 0
    for ts, symbol, side, price, usd in orders:
        t0 = ts // bucket_ms * bucket_ms
        closed = [s for (sym, s) in closes if sym == symbol and s + interval_ms <= t0 + bucket_ms]
        if not closed:
            unpriced += 1
            continue
        values = sorted(closes[symbol, max(closed)])
        ref = values[(len(values) - 1) // 2]
        cell = cells.setdefault((t0, symbol, price_bucket(price, ref, grid)), [ref, 0.0, 0.0, 0])
        cell[1 if side == "long" else 2] += usd
        cell[3] += 1
    return cells, unpriced


@st.composite
def market_days(draw):
    symbols = ["BTC", "ETH"]
    bars = {}
    for hour in range(-3, 24):
        for symbol in symbols:
            for exchange in ("Binance", "OKX", "Bybit"):
                if draw(st.booleans()):
                    close = draw(st.floats(50, 150, allow_nan=False).map(lambda x: round(x, 2)))
                    bars[T0 + hour * HOUR, symbol, exchange] = close
    grid = draw(st.sampled_from([0.001, 0.0025, 0.01, 0.05]))
    closes = sorted(set(bars.values())) or [100.0]
    price = st.one_of(
        st.floats(40, 170, allow_nan=False),
        # prices on bucket edges of some bar's close, which is often the reference
        st.tuples(st.sampled_from(closes), st.integers(-30, 30)).map(
            lambda c: c[0] * (1 + c[1] * grid)
        ),
    )
    orders = draw(
        st.lists(
            st.tuples(
                st.integers(0, 24 * HOUR - 1).map(lambda ms: T0 + ms),
                st.sampled_from(symbols),
                st.sampled_from(["long", "short"]),
                price,
                st.floats(1, 1e6, allow_nan=False),
            ),
            min_size=1,
            max_size=80,
        )
    )
    bucket_minutes = draw(st.sampled_from([1, 5, 15, 60]))
    return [(t, s, e, c) for (t, s, e), c in bars.items()], orders, grid, bucket_minutes


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market_days())
def test_sql_matches_the_python_reference(case):
    bars, orders, grid, bucket_minutes = case
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(tmp)
        before = [b for b in bars if b[0] < T0]
        lake.write_day("price_ohlc", DAY - timedelta(days=1), prices_table(before))
        lake.write_day("price_ohlc", DAY, prices_table([b for b in bars if b[0] >= T0]))
        lake.write_day("liquidation_orders", DAY, orders_table(orders))
        cells, unpriced, _ = run(lake, bucket_minutes=bucket_minutes, grid=grid)
    expected, expected_unpriced = reference(
        orders, bars, bucket_ms=bucket_minutes * MINUTE, grid=grid, interval_ms=HOUR
    )
    got = {
        (int(r["ts"].timestamp() * 1000), r["symbol"], r["bucket"]): r for r in cells.to_pylist()
    }
    assert got.keys() == expected.keys()
    for key, (ref, long_usd, short_usd, events) in expected.items():
        row = got[key]
        assert row["ref_price"] == ref
        assert row["events"] == events
        assert row["long_usd"] == pytest.approx(long_usd, rel=1e-12)
        assert row["short_usd"] == pytest.approx(short_usd, rel=1e-12)
        assert row["total_usd"] == pytest.approx(long_usd + short_usd, rel=1e-12)
        assert row["price_low"] <= row["price_high"]
    assert unpriced == expected_unpriced
