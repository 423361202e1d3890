"""Composite maths on their own, then the whole composite on a hand-worked market."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from cg_assets.heatmaps.composite import (
    ASSET,
    CHECK_SQL,
    SCHEMA,
    CompositeHeatmapConfig,
    SwingParams,
    Weights,
    composite_score,
    composite_table,
    compute_composite,
    min_max,
    pivots,
    swing_proximity,
)
from cg_assets.heatmaps.liquidation import SCHEMA as HEATMAP_SCHEMA
from cg_assets.resources import LakeResource
from cg_assets.storage import Lake
from cg_assets_tests.test_heatmaps.conftest import HOUR, day_start_ms, oi_table, prices_table
from cg_assets_tests.test_heatmaps.test_liquidation_sql import DAY, T0


def test_min_max_scales_to_the_unit_interval():
    assert min_max(np.array([2.0, 4.0, 6.0])).tolist() == [0.0, 0.5, 1.0]


def test_min_max_of_constant_input_does_not_divide_by_zero():
    assert min_max(np.array([5.0, 5.0, 5.0])).tolist() == [1.0, 1.0, 1.0]
    assert min_max(np.array([0.0, 0.0])).tolist() == [0.0, 0.0]
    assert min_max(np.array([7.0])).tolist() == [1.0]
    assert min_max(np.array([])).tolist() == []


def test_min_max_normalises_each_group_on_its_own():
    values = np.array([1.0, 3.0, 10.0, 10.0, 0.0, 50.0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    assert min_max(values, groups).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_weights_default_and_validation():
    assert Weights() == Weights(0.6, 0.3, 0.1)
    with pytest.raises(
        ValueError, match=r"weights must sum to 1: w_liq=0.6 \+ w_oi=0.3 \+ w_swing=0.2 = 1.1"
    ):
        Weights(0.6, 0.3, 0.2)
    with pytest.raises(ValueError, match=r"w_oi=-0.1: a weight must lie in \[0, 1\]"):
        Weights(0.6, -0.1, 0.5)
    assert Weights(0.5, 0.5, 0.0).swing == 0.0


def test_config_rejects_bad_values_naming_them():
    with pytest.raises(ValidationError, match="weights must sum to 1"):
        CompositeHeatmapConfig(w_liq=0.7)
    with pytest.raises(ValidationError, match="step_minutes=7"):
        CompositeHeatmapConfig(step_minutes=7)
    with pytest.raises(ValidationError, match="window_minutes=0"):
        CompositeHeatmapConfig(window_minutes=0)
    with pytest.raises(ValidationError, match="pivot_lookback_bars=4"):
        CompositeHeatmapConfig(pivot_lookback_bars=4, pivot_span_bars=2)
    with pytest.raises(ValidationError, match=r"grid=0\.3"):
        CompositeHeatmapConfig(grid=0.3)
    with pytest.raises(ValueError, match="pivot_span_bars=0"):
        SwingParams(span_bars=0)
    with pytest.raises(ValueError, match="swing_reach_buckets=0"):
        SwingParams(reach_buckets=0.0)


def test_score_is_the_weighted_sum():
    score = composite_score(
        np.array([1.0, 0.5, 0.0]), np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]), Weights()
    )
    assert score == pytest.approx([1.0, 0.4, 0.3])
    assert score.max() <= 1.0


def test_pivots_need_neighbours_on_both_sides():
    high = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 1.0, 2.0])
    low = np.array([0.5, 2.0, 1.0, 4.0, 3.0, 0.2, 1.5])
    is_high, is_low = pivots(high, low, span=1)
    assert np.flatnonzero(is_high).tolist() == [1, 3]
    assert np.flatnonzero(is_low).tolist() == [2, 5]
    assert not pivots(high, low, span=4)[0].any()  # 7 bars cannot hold a 9-bar pivot


def test_swing_falls_linearly_with_distance_from_a_pivot():
    low = np.array([100.0, 100.25, 100.5, 101.0, 102.0])
    high = low + 0.25
    swing = swing_proximity(low, high, np.array([100.1]), width=0.25, reach=4.0)
    # inside, 0.15 above, 0.4 above, 0.9 above (3.6 widths), 1.9 above (beyond reach)
    assert swing == pytest.approx([1.0, 1 - 0.6 / 4, 1 - 1.6 / 4, 1 - 3.6 / 4, 0.0])
    assert swing_proximity(low, high, np.array([]), 0.25, 4.0).tolist() == [0.0] * 5


@pytest.fixture
def composite_lake(tmp_path: Path) -> Lake:
    """BTC at a flat 100 with every bar spanning 99.4 .. 100.6 from 20:00 the day before; the
    00:00 bar builds 600 USD of open interest; two liquidation cells between 00:00 and 01:00."""
    lake = Lake(tmp_path)
    bar = lambda t: (t, "BTC", "Binance", 100.0, 100.6, 99.4)  # noqa: E731
    lake.write_day(
        "price_ohlc",
        DAY - timedelta(days=1),
        prices_table([bar(T0 - h * HOUR) for h in (4, 3, 2, 1)]),
    )
    lake.write_day("price_ohlc", DAY, prices_table([bar(T0)]))
    lake.write_day("open_interest_ohlc", DAY, oi_table([(T0, "BTC", 1000.0, 1600.0)]))
    cells = pa.table(
        {
            "ts": pa.array([T0 + 60_000, T0 + 120_000], pa.timestamp("ms", tz="UTC")),
            "symbol": ["BTC", "BTC"],
            "bucket": [2, -4],
            "grid": [0.0025, 0.0025],
            "bucket_minutes": [1, 1],
            "ref_price": [100.0, 100.0],
            "price_low": [100.5, 99.0],
            "price_high": [100.75, 99.25],
            "total_usd": [3000.0, 1000.0],
            "long_usd": [0.0, 1000.0],
            "short_usd": [3000.0, 0.0],
            "events": [3, 1],
        },
        schema=HEATMAP_SCHEMA,
    )
    lake.write_day("liquidation_heatmap", DAY, cells)
    return lake


def test_composite_on_a_hand_worked_market(composite_lake: Lake):
    config = CompositeHeatmapConfig(step_minutes=60)
    table = compute_composite(
        duckdb.connect(),
        composite_lake,
        [DAY],
        ("BTC", "ETH"),
        config,
        HOUR,
        now_ms=day_start_ms(DAY) + 10 * HOUR,
    )
    window = {r["bucket"]: r for r in table.to_pylist() if r["ts"].timestamp() * 1000 == T0 + HOUR}
    assert sorted(window) == [-4, -3, -2, -1, 0, 1, 2]
    # liquidations: 3000 in bucket 2, 1000 in bucket -4 (cells placed by their mid price)
    assert {b: r["liq_norm"] for b, r in window.items()} == pytest.approx(
        {-4: 1 / 3, -3: 0, -2: 0, -1: 0, 0: 0, 1: 0, 2: 1}
    )
    # 600 USD of OI build spread over the 6 buckets 99.4 .. 100.6 traded through
    assert {b: r["oi_build_usd"] for b, r in window.items()} == pytest.approx(
        {-4: 0, -3: 100, -2: 100, -1: 100, 0: 100, 1: 100, 2: 100}
    )
    assert window[-4]["oi_norm"] == 0.0
    assert window[0]["oi_norm"] == 1.0
    # pivots at 100.6 and 99.4; bucket width 0.25, reach 4 buckets
    assert {b: r["swing"] for b, r in window.items()} == pytest.approx(
        {-4: 0.85, -3: 1.0, -2: 0.9, -1: 0.65, 0: 0.65, 1: 0.9, 2: 1.0}
    )
    assert window[2]["score"] == pytest.approx(1.0)
    assert window[-4]["score"] == pytest.approx(0.6 / 3 + 0.1 * 0.85)
    assert window[0]["price_low"] == pytest.approx(100.0)
    assert window[0]["price_high"] == pytest.approx(100.25)
    assert {r["window_minutes"] for r in table.to_pylist()} == {60}
    assert set(table["symbol"].to_pylist()) == {"BTC"}  # ETH has no prices: no windows


def test_windows_never_run_on_a_stale_price(composite_lake: Lake):
    table = compute_composite(
        duckdb.connect(),
        composite_lake,
        [DAY],
        ("BTC",),
        CompositeHeatmapConfig(step_minutes=15),
        HOUR,
        now_ms=day_start_ms(DAY) + 10 * HOUR,
    )
    ends = sorted({int(r["ts"].timestamp() * 1000) - T0 for r in table.to_pylist()})
    # the last bar closed at 01:00: windows up to 01:45 use it, later ones have no price
    assert ends == [m * 60_000 for m in range(0, 120, 15)]


def test_a_window_reads_only_heatmap_cells_that_have_ended(composite_lake: Lake):
    """An hour cell [00:00, 01:00) holds liquidations up to 01:00: windows ending at 00:15,
    00:30 and 00:45 must not see it (that would be the future), the window ending at 01:00
    must, and so must the two minute cells of the fixture once they ended (00:02, 00:03)."""
    hour_cell = pa.table(
        {
            "ts": pa.array([T0], pa.timestamp("ms", tz="UTC")),
            "symbol": ["BTC"],
            "bucket": [0],
            "grid": [0.0025],
            "bucket_minutes": [60],
            "ref_price": [100.0],
            "price_low": [100.0],
            "price_high": [100.25],
            "total_usd": [5000.0],
            "long_usd": [5000.0],
            "short_usd": [0.0],
            "events": [7],
        },
        schema=HEATMAP_SCHEMA,
    )
    minute_cells = composite_lake.read_days("liquidation_heatmap", [DAY])
    composite_lake.write_day(
        "liquidation_heatmap",
        DAY,
        pa.concat_tables(
            [minute_cells.select(HEATMAP_SCHEMA.names).cast(HEATMAP_SCHEMA), hour_cell]
        ),
    )
    table = compute_composite(
        duckdb.connect(),
        composite_lake,
        [DAY],
        ("BTC",),
        CompositeHeatmapConfig(step_minutes=15, window_minutes=60),
        HOUR,
        now_ms=T0 + 2 * HOUR,
    )
    liquidated: dict[int, float] = {}
    for row in table.to_pylist():
        minute = int(row["ts"].timestamp() * 1000 - T0) // 60_000
        liquidated[minute] = liquidated.get(minute, 0.0) + row["liq_usd"]
    assert liquidated == {
        0: 0.0,
        15: 4000.0,
        30: 4000.0,
        45: 4000.0,
        60: 9000.0,
        75: 0.0,
        90: 0.0,
        105: 0.0,
    }


def test_composite_without_liquidations_has_no_nan(tmp_path: Path):
    lake = Lake(tmp_path)
    lake.write_day("price_ohlc", DAY, prices_table([(T0, "BTC", "Binance", 100.0, 100.6, 99.4)]))
    table = compute_composite(
        duckdb.connect(),
        lake,
        [DAY],
        ("BTC",),
        CompositeHeatmapConfig(step_minutes=60),
        HOUR,
        T0 + 2 * HOUR,
    )
    assert table.num_rows == 6
    for column in ("liq_norm", "oi_norm", "swing", "score"):
        values = table[column].to_numpy()
        assert not np.isnan(values).any()
        assert values.tolist() == [0.0] * 6


def test_scores_check_reads_back_what_was_stored(composite_lake: Lake, tmp_path: Path):
    config = CompositeHeatmapConfig(step_minutes=60)
    table = compute_composite(
        duckdb.connect(), composite_lake, [DAY], ("BTC", "ETH"), config, HOUR, T0 + 10 * HOUR
    )
    resource = LakeResource.at(composite_lake.data_dir)
    resource.lake.write_day(ASSET, DAY, table)

    def passed() -> dict[str, bool]:
        outcomes = resource.checks(ASSET, [DAY], SCHEMA, CHECK_SQL)
        return {o.name: o.passed for o in outcomes}

    assert passed() == {"schema": True, "scores_in_range": True}
    score = table.column_names.index("score")
    broken = table.set_column(score, "score", pa.array([1.5] * table.num_rows, pa.float64()))
    resource.lake.write_day(ASSET, DAY, broken)
    assert passed() == {"schema": True, "scores_in_range": False}


def test_no_priced_window_gives_an_empty_table_not_an_error():
    empty = {
        name: np.array([], dtype=dtype)
        for name, dtype in (
            ("symbol", object),
            ("end_ms", np.int64),
            ("ref_price", np.float64),
            ("bucket", np.int64),
            ("liq_usd", np.float64),
            ("oi_usd", np.float64),
        )
    }
    table = composite_table(
        empty,
        {},
        grid=0.0025,
        window_minutes=60,
        weights=CompositeHeatmapConfig().weights(),
        swing=SwingParams(),
        interval_ms=HOUR,
    )
    assert table.num_rows == 0
    assert table.schema == SCHEMA
