"""The heatmap assets end to end: lake Parquet in, Parquet + picture + catalog view out."""

from __future__ import annotations

import base64
import io
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from cg_assets.definitions import build_defs, build_resources
from cg_assets.heatmaps.composite import ASSET as COMPOSITE
from cg_assets.heatmaps.composite import build_composite_heatmap
from cg_assets.heatmaps.liquidation import ASSET as HEATMAP
from cg_assets.heatmaps.liquidation import build_liquidation_heatmap
from cg_assets.heatmaps.model import ASSET as MODEL
from cg_assets.heatmaps.pictures import MAX_PNG_BYTES
from cg_assets.settings import Settings
from cg_assets.storage import Lake
from cg_assets_tests.test_heatmaps.conftest import (
    HOUR,
    MINUTE,
    day_start_ms,
    oi_table,
    orders_table,
    prices_table,
    recent_day,
)


def write_market(settings: Settings, day: date) -> float:
    """A random-walk BTC day with 2,000 liquidations along the path; ETH has none. Returns the
    USD liquidated."""
    lake = Lake(settings.data_dir)
    rng = np.random.default_rng(5)
    t0 = day_start_ms(day)
    minutes = np.arange(-24 * 60, 24 * 60)
    path = 90_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, len(minutes))))
    bars = []
    for hour in range(-24, 24):
        chunk = path[(hour + 24) * 60 : (hour + 25) * 60]
        for exchange, basis in (("Binance", 1.0), ("OKX", 1.0002)):
            bars.append(
                (t0 + hour * HOUR, "BTC", exchange, chunk[-1] * basis, chunk.max(), chunk.min())
            )
    lake.write_day("price_ohlc", day - timedelta(days=1), prices_table(bars[:48]))
    lake.write_day("price_ohlc", day, prices_table(bars[48:]))
    lake.write_day(
        "open_interest_ohlc",
        day,
        oi_table([(t0 + h * HOUR, "BTC", 5e9 + h * 1e7, 5e9 + (h + 1) * 1e7) for h in range(24)]),
    )
    when = np.sort(rng.integers(0, 24 * HOUR, 2000))
    price = path[24 * 60 + when // MINUTE] * (1 + rng.normal(0, 0.002, len(when)))
    usd = rng.lognormal(9, 1.2, len(when))
    orders = [
        (t0 + int(t), "BTC", "long" if i % 3 else "short", float(p), float(u))
        for i, (t, p, u) in enumerate(zip(when, price, usd, strict=True))
    ]
    lake.write_day("liquidation_orders", day, orders_table(orders))
    return float(usd.sum())


def materialize(settings: Settings, asset: str, day: date, config: dict | None = None):
    build = {HEATMAP: build_liquidation_heatmap, COMPOSITE: build_composite_heatmap}[asset]
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [build(settings)],
            resources=build_resources(settings),
            instance=instance,
            partition_key=day.isoformat(),
            run_config={"ops": {asset: {"config": config or {}}}},
            raise_on_error=False,
        )


def picture(metadata: dict, alt: str) -> bytes:
    text = metadata["heatmap"].value
    prefix = f"![{alt}](data:image/png;base64,"
    assert text.startswith(prefix)
    return base64.b64decode(text[len(prefix) : -1])


def test_liquidation_heatmap_end_to_end(settings: Settings):
    day = recent_day(3)
    liquidated = write_market(settings, day)
    result = materialize(settings, HEATMAP, day, {"grid": 0.005, "bucket_minutes": 5})
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["events"].value == 2000
    assert metadata["liquidated_usd"].value == pytest.approx(liquidated)
    assert metadata["unpriced_events"].value == 0
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"schema": True, "usd_conserved": True}

    lake = Lake(settings.data_dir)
    stored = lake.read_days(HEATMAP, [day])
    assert stored.num_rows == metadata["dagster/row_count"].value > 0
    assert set(stored["grid"].to_pylist()) == {0.005}
    assert {int(t.timestamp() * 1000) % (5 * MINUTE) for t in stored["ts"].to_pylist()} == {0}

    png = picture(metadata, f"{HEATMAP} {day}")
    assert len(png) <= MAX_PNG_BYTES
    on_disk = Path(lake.file(HEATMAP, day, "heatmap.png"))
    assert on_disk.read_bytes() == png
    image = Image.open(io.BytesIO(png))
    assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 20

    con = duckdb.connect(str(settings.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        [(events,)] = con.sql(f"SELECT sum(events) FROM {HEATMAP}").fetchall()
    finally:
        con.close()
    assert events == 2000


def test_a_cell_lost_on_the_way_to_the_lake_fails_usd_conserved(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    """The check reads back what was stored: a write that silently loses a cell fails it."""
    day = recent_day(3)
    write_market(settings, day)
    write_day = Lake.write_day

    def lossy(self: Lake, asset: str, on: date, table: pa.Table) -> str:
        return write_day(self, asset, on, table.slice(1) if asset == HEATMAP else table)

    monkeypatch.setattr(Lake, "write_day", lossy)
    result = materialize(settings, HEATMAP, day, {"bucket_minutes": 5})
    assert result.success
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "usd_conserved"]
    assert not check.passed
    assert check.metadata["unbalanced_time_buckets"].value == 1
    assert check.metadata["cells_not_long_plus_short"].value == 0


def test_composite_heatmap_end_to_end(settings: Settings):
    day = recent_day(3)
    write_market(settings, day)
    assert materialize(settings, HEATMAP, day).success
    result = materialize(settings, COMPOSITE, day, {"window_minutes": 120, "step_minutes": 30})
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"schema": True, "scores_in_range": True}
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    stored = Lake(settings.data_dir).read_days(COMPOSITE, [day])
    assert stored.num_rows == metadata["dagster/row_count"].value > 0
    assert set(stored["symbol"].to_pylist()) == {"BTC"}  # ETH has no prices in this lake
    assert len(set(stored["ts"].to_pylist())) == 48  # a window every 30 minutes of the day
    assert set(stored["window_minutes"].to_pylist()) == {120}
    for column in ("liq_norm", "oi_norm", "swing", "score"):
        values = stored[column].to_numpy()
        assert values.min() >= 0.0
        assert values.max() <= 1.0
    # Liquidations happen all day, so every later window has a bucket holding its peak mass.
    rows = stored.to_pylist()
    peaks = {w: max(r["liq_norm"] for r in rows if r["ts"] == w) for w in {r["ts"] for r in rows}}
    first = min(peaks)
    assert peaks.pop(first) == 0.0  # ends at midnight: the day before had no liquidations
    assert set(peaks.values()) == {1.0}
    assert len(picture(metadata, f"{COMPOSITE} {day}")) <= MAX_PNG_BYTES


def test_bad_weights_fail_the_run_with_a_clear_message(settings: Settings):
    day = recent_day(3)
    result = materialize(settings, COMPOSITE, day, {"w_liq": 0.5, "w_oi": 0.3, "w_swing": 0.1})
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "weights must sum to 1: w_liq=0.5 + w_oi=0.3 + w_swing=0.1 = 0.9" in message


def test_an_empty_day_writes_an_empty_partition(settings: Settings):
    day = recent_day(4)
    result = materialize(settings, HEATMAP, day)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["dagster/row_count"].value == 0
    assert "heatmap" not in metadata
    assert Lake(settings.data_dir).read_days(HEATMAP, [day]).num_rows == 0


def test_definitions_load_with_lineage(settings: Settings):
    graph = build_defs(settings).resolve_asset_graph()
    deps = {
        key.to_user_string(): sorted(k.to_user_string() for k in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
        if key.to_user_string() in (HEATMAP, COMPOSITE)
    }
    assert deps == {
        HEATMAP: ["liquidation_orders", "price_ohlc"],
        COMPOSITE: ["liquidation_heatmap", "open_interest_ohlc", "price_ohlc"],
    }
    for asset in (HEATMAP, COMPOSITE, MODEL):
        assert graph.get(dg.AssetKey(asset)).group_name == "heatmaps"
