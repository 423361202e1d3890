"""The heatmap SQL on hand-worked cases, against a plain-Python reference on random data, and
the `usd_conserved` check against a lake whose stored cells were tampered with."""

from __future__ import annotations

import bisect
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cg_assets.heatmaps.buckets import price_bucket
from cg_assets.heatmaps.liquidation import (
    ASSET,
    SCHEMA,
    HeatmapRows,
    heatmap_cells,
    open_inputs,
    split_unpriced,
    usd_conserved,
)
from cg_assets.storage import Lake
from cg_assets.storage.checks import run_checks
from cg_assets.tables import CheckOutcome
from cg_assets_tests.test_heatmaps.conftest import (
    HOUR,
    MINUTE,
    Bar,
    Order,
    day_start_ms,
    orders_table,
    prices_table,
)

DAY = date(2026, 3, 2)
T0 = day_start_ms(DAY)


def run(lake: Lake, bucket_minutes: int = 1, grid: float = 0.0025, day: date = DAY) -> HeatmapRows:
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


def cells_by_key(rows: HeatmapRows) -> dict[tuple, tuple]:
    """(ms after T0, coin, bucket) -> (ref_price, total, long, short, events)."""
    return {
        (r["ts"].timestamp() * 1000 - T0, r["symbol"], r["bucket"]): (
            r["ref_price"],
            r["total_usd"],
            r["long_usd"],
            r["short_usd"],
            r["events"],
        )
        for r in rows.cells.to_pylist()
    }


@pytest.fixture
def hand_lake(tmp_path: Path) -> Lake:
    """BTC bars: the 23:00 bar before DAY closed at 100 (Binance) and 102 (OKX), so its close
    is known from 00:00; the 00:00 bar of DAY closed at 110 (Binance), known from 01:00. ETH
    has no bars at all."""
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
                (T0 + 58 * MINUTE + 30_000, "BTC", "long", 110.0, 50.0),  # 00:58:30
                (T0 + 59 * MINUTE + 10_000, "BTC", "short", 110.0, 70.0),  # 00:59:10
                (T0 + HOUR, "BTC", "long", 110.0, 40.0),  # 01:00:00, the 00:00 bar has closed
                (T0 + 10_000, "ETH", "long", 3000.0, 999.0),  # no ETH price yet
            ]
        ),
    )
    return lake


def test_hand_worked_cells(hand_lake: Lake):
    rows = run(hand_lake)
    assert cells_by_key(rows) == {
        (0, "BTC", -1): (100.0, 200.0, 200.0, 0.0, 1),
        (0, "BTC", 0): (100.0, 1300.0, 1000.0, 300.0, 2),
        (0, "BTC", 1): (100.0, 500.0, 0.0, 500.0, 1),
        # 110 is 10% above the 23:00 close: bucket 40. The 00:00 bar closes at 01:00, after
        # the minutes 00:58 and 00:59 began, so neither may use it.
        (58 * MINUTE, "BTC", 40): (100.0, 50.0, 50.0, 0.0, 1),
        (59 * MINUTE, "BTC", 40): (100.0, 70.0, 0.0, 70.0, 1),
        (60 * MINUTE, "BTC", 0): (110.0, 40.0, 40.0, 0.0, 1),
    }
    # The minutes 00:01 .. 00:57 had no events and have no cells.
    assert (rows.unpriced_events, rows.unpriced_usd) == (1, 999.0)
    assert rows.unpriced.to_pylist() == [
        {"symbol": "ETH", "t0": T0, "events": 1, "long_usd": 999.0, "short_usd": 0.0}
    ]


def test_bounds_grid_and_bucket_length_are_stored(hand_lake: Lake):
    cells = run(hand_lake, bucket_minutes=5).cells
    row = next(r for r in cells.to_pylist() if r["bucket"] == -1)
    assert row["grid"] == 0.0025
    assert row["bucket_minutes"] == 5
    assert row["price_low"] == pytest.approx(99.75)
    assert row["price_high"] == pytest.approx(100.0)
    assert cells.schema == SCHEMA
    assert cells.schema.field("ts").type.unit == "ms"
    assert str(cells.schema.field("ts").type.tz) == "UTC"


def test_an_hour_bucket_takes_the_bar_closed_at_its_start(hand_lake: Lake):
    """The event at 00:59:10 in the hour bucket 00:00: the 00:00 bar's close (110) is known only
    at 01:00, so it is measured from the 23:00 bar's 100, like every event of that hour."""
    got = cells_by_key(run(hand_lake, bucket_minutes=60, grid=0.01))
    assert got == {
        (0, "BTC", -1): (100.0, 200.0, 200.0, 0.0, 1),  # 99.75: 0.25% below 100
        (0, "BTC", 0): (100.0, 1800.0, 1000.0, 800.0, 3),  # 100.0, 100.3, 100.1
        (0, "BTC", 10): (100.0, 120.0, 50.0, 70.0, 2),  # 110 at 00:58:30 and at 00:59:10
        (HOUR, "BTC", 0): (110.0, 40.0, 40.0, 0.0, 1),  # 01:00:00: the 00:00 bar has closed
    }


def test_no_events_means_no_cells(tmp_path: Path):
    lake = Lake(tmp_path)
    lake.write_day("price_ohlc", DAY, prices_table([(T0, "BTC", "Binance", 110.0)]))
    rows = run(lake)
    assert rows.cells.num_rows == 0
    assert rows.unpriced_events == 0


# ----------------------------------------------------------------------- reference on random data


def reference(
    orders: Sequence[Order], bars: Sequence[Bar], *, bucket_ms: int, grid: float, interval_ms: int
) -> tuple[dict, int]:
    """The heatmap from the README's sentence alone: "a price_ohlc bar is usable for an event
    only once it has closed at or before the start of the event's own time bucket"; the newest
    usable bar gives the reference, the lower median of its exchanges' closes.

    Written per coin as a sorted list of close times searched with bisect, not as SQL: the
    question asked of each event is "which closes were known when its bucket began?".
    """
    closes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for start, symbol, _exchange, close in bars:
        closes[symbol][start + interval_ms].append(close)
    known = {symbol: sorted(by_close) for symbol, by_close in closes.items()}
    cells: dict = {}
    unpriced = 0
    for ts, symbol, side, price, usd in orders:
        bucket_start = ts - ts % bucket_ms
        times = known.get(symbol, [])
        usable = bisect.bisect_right(times, bucket_start)  # closes at or before the start
        if usable == 0:
            unpriced += 1
            continue
        values = sorted(closes[symbol][times[usable - 1]])
        ref = values[(len(values) - 1) // 2]
        cell = cells.setdefault(
            (bucket_start, symbol, price_bucket(price, ref, grid)), [ref, 0.0, 0.0, 0]
        )
        cell[1 if side == "long" else 2] += usd
        cell[3] += 1
    return cells, unpriced


@st.composite
def market_days(draw: Callable) -> tuple[list[Bar], list[Order], float, int]:
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
    when = st.one_of(
        st.integers(0, 24 * HOUR - 1),
        # on and around the hours, where a bar closes
        st.tuples(st.integers(0, 23), st.integers(-2, 2)).map(
            lambda h: max(0, h[0] * HOUR + h[1] * 1000)
        ),
    )
    orders = draw(
        st.lists(
            st.tuples(
                when.map(lambda ms: T0 + ms),
                st.sampled_from(symbols),
                st.sampled_from(["long", "short"]),
                price,
                st.floats(1, 1e6, allow_nan=False),
            ),
            min_size=1,
            max_size=80,
        )
    )
    bucket_minutes = draw(st.sampled_from([1, 5, 15, 60, 240]))
    return [(t, s, e, c) for (t, s, e), c in bars.items()], orders, grid, bucket_minutes


def write_case(lake: Lake, bars: Sequence[Bar], orders: Sequence[Order]) -> None:
    lake.write_day(
        "price_ohlc", DAY - timedelta(days=1), prices_table([b for b in bars if b[0] < T0])
    )
    lake.write_day("price_ohlc", DAY, prices_table([b for b in bars if b[0] >= T0]))
    lake.write_day("liquidation_orders", DAY, orders_table(orders))


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market_days())
def test_sql_matches_the_python_reference(case):
    bars, orders, grid, bucket_minutes = case
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(tmp)
        write_case(lake, bars, orders)
        rows = run(lake, bucket_minutes=bucket_minutes, grid=grid)
    expected, expected_unpriced = reference(
        orders, bars, bucket_ms=bucket_minutes * MINUTE, grid=grid, interval_ms=HOUR
    )
    got = {
        (int(r["ts"].timestamp() * 1000), r["symbol"], r["bucket"]): r
        for r in rows.cells.to_pylist()
    }
    assert got.keys() == expected.keys()
    for key, (ref, long_usd, short_usd, events) in expected.items():
        row = got[key]
        assert row["ref_price"] == ref
        assert row["events"] == events
        assert row["bucket_minutes"] == bucket_minutes
        assert row["long_usd"] == pytest.approx(long_usd, rel=1e-12)
        assert row["short_usd"] == pytest.approx(short_usd, rel=1e-12)
        assert row["total_usd"] == pytest.approx(long_usd + short_usd, rel=1e-12)
        assert row["price_low"] <= row["price_high"]
    assert rows.unpriced_events == expected_unpriced


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market_days(), st.integers(1, 23))
def test_a_cell_never_changes_when_later_bars_arrive(case, cut_hour):
    """Computed live at `cut` (only the bars closed by then exist) or a day later, every cell
    that had begun by `cut` is the same: its price came from bars already closed."""
    bars, orders, grid, bucket_minutes = case
    cut = T0 + cut_hour * HOUR
    with tempfile.TemporaryDirectory() as later, tempfile.TemporaryDirectory() as live:
        write_case(Lake(later), bars, orders)
        write_case(Lake(live), [b for b in bars if b[0] + HOUR <= cut], orders)
        full, early = (
            run(Lake(d), bucket_minutes=bucket_minutes, grid=grid) for d in (later, live)
        )
    begun = cells_by_key(full), cells_by_key(early)
    assert {k: v for k, v in begun[0].items() if k[0] + T0 <= cut} == {
        k: v for k, v in begun[1].items() if k[0] + T0 <= cut
    }


# ----------------------------------------------------------------------- usd_conserved read back


def check_stored(lake: Lake, rows: HeatmapRows, bucket_minutes: int) -> CheckOutcome:
    """The asset's `usd_conserved` over what the lake holds now."""
    check = usd_conserved(lake, [DAY], (T0, T0 + 24 * HOUR), bucket_minutes * MINUTE, rows.unpriced)
    with duckdb.connect() as con:
        outcomes = run_checks(con, lake, ASSET, [DAY], SCHEMA, {"usd_conserved": check})
    [outcome] = [o for o in outcomes if o.name == "usd_conserved"]
    return outcome


def store(lake: Lake, cells: pa.Table) -> None:
    lake.write_day(ASSET, DAY, cells)


def test_usd_conserved_passes_on_what_was_written(hand_lake: Lake):
    rows = run(hand_lake, bucket_minutes=5)
    store(hand_lake, rows.cells)
    outcome = check_stored(hand_lake, rows, 5)
    assert outcome.passed, outcome.summary
    assert outcome.details == {"unbalanced_time_buckets": 0, "cells_not_long_plus_short": 0}


def with_first(table: pa.Table, column: str, value: object) -> pa.Table:
    """`table` with `column` of its first row set to `value`."""
    values = table[column].to_pylist()
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array([value, *values[1:]], table[column].type))


@pytest.mark.parametrize(
    ("tamper", "details"),
    [
        # one cell lost on the way to the lake
        (lambda t: t.slice(1), {"unbalanced_time_buckets": 1, "cells_not_long_plus_short": 0}),
        # one cell stored twice
        (
            lambda t: pa.concat_tables([t, t.slice(0, 1)]),
            {"unbalanced_time_buckets": 1, "cells_not_long_plus_short": 0},
        ),
        # a cell's long USD corrupted: its total is no longer long + short either
        (
            lambda t: with_first(t, "long_usd", t["long_usd"][0].as_py() + 1.0),
            {"unbalanced_time_buckets": 1, "cells_not_long_plus_short": 1},
        ),
        # a cell filed under the next minute
        (
            lambda t: with_first(t, "ts", t["ts"][0].as_py() + timedelta(minutes=1)),
            {"unbalanced_time_buckets": 2, "cells_not_long_plus_short": 0},
        ),
    ],
    ids=["dropped", "duplicated", "corrupted", "misfiled"],
)
def test_usd_conserved_fails_on_tampered_cells(hand_lake: Lake, tamper, details):
    rows = run(hand_lake)
    store(hand_lake, tamper(rows.cells))
    outcome = check_stored(hand_lake, rows, 1)
    assert not outcome.passed
    assert outcome.details == details


def test_usd_conserved_counts_unpriced_events_once(hand_lake: Lake):
    """Events without a price are not in the cells; forgetting them fails the check."""
    rows = run(hand_lake)
    store(hand_lake, rows.cells)
    assert check_stored(hand_lake, rows, 1).passed
    forgotten = HeatmapRows(rows.cells, rows.unpriced.slice(0, 0))
    assert check_stored(hand_lake, forgotten, 1).details["unbalanced_time_buckets"] == 1
