"""CoinGlass's model heatmap: reshaping, the simulator's positions, and plan gating."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cg_assets.coinglass import CoinGlassClient
from cg_assets.definitions import build_resources
from cg_assets.heatmaps.model import (
    ASSET,
    ModelHeatmapConfig,
    build_model_heatmap,
    candle_ms,
    heatmap_path,
    reshape,
)
from cg_assets.settings import Settings
from cg_assets.sim import SimulatorServer, SyntheticMarket
from cg_assets.sim.heatmap import HEATMAP_RANGES, OPEN_SHARE, model_heatmap
from cg_assets.storage import Lake

# The documented example's shape (reference §5.6), with indexes that fit its axes: candle
# times in seconds, prices as strings, one USD value sent as a string.
CAPTURED = {
    "y_axis": [47968.54, 48000.00, 48031.46],
    "liquidation_leverage_data": [[1, 2, 318624.82], [0, 1, 2288867.26], [1, 0, "1500.5"]],
    "price_candlesticks": [
        [1722676500, "61486", "61596.4", "61434.4", "61539.9", "63753192.1129"],
        [1722676800, "61539.9", "61600", "61500.1", "61580.2", "51234567.8"],
    ],
}


def test_reshape_a_captured_response_into_tidy_rows():
    table = reshape(CAPTURED, "BTC", model=2, range_label="12h")
    rows = table.to_pylist()
    assert [(r["ts"], r["price_level"], r["liquidation_usd"]) for r in rows] == [
        (datetime(2024, 8, 3, 9, 15, tzinfo=UTC), 48000.00, 2288867.26),
        (datetime(2024, 8, 3, 9, 20, tzinfo=UTC), 47968.54, 1500.5),
        (datetime(2024, 8, 3, 9, 20, tzinfo=UTC), 48031.46, 318624.82),
    ]
    assert {(r["symbol"], r["model"], r["range"]) for r in rows} == {("BTC", 2, "12h")}
    assert table.schema.field("ts").type.unit == "ms"


def test_candle_times_are_seconds_unless_they_can_only_be_milliseconds():
    assert candle_ms(np.array([1722676500])).tolist() == [1722676500000]
    assert candle_ms(np.array([1722676500000])).tolist() == [1722676500000]


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([[2, 0, 1.0]], r"candle index 2 outside price_candlesticks \(length 2\)"),
        ([[0, 3, 1.0]], r"level index 3 outside y_axis \(length 3\)"),
        ([[0, 1]], r"liquidation_leverage_data: expected rows"),
    ],
)
def test_malformed_cells_are_named(cells: list, message: str):
    with pytest.raises(ValueError, match=message):
        reshape({**CAPTURED, "liquidation_leverage_data": cells}, "BTC", 1, "12h")


def test_empty_response_gives_no_rows():
    assert reshape({}, "BTC", 1, "3d").num_rows == 0


def test_config_validation_names_the_field():
    with pytest.raises(ValidationError, match="model=4: expected 1, 2 or 3"):
        ModelHeatmapConfig(model=4)
    with pytest.raises(ValidationError, match="range='2d': expected one of 12h, 24h"):
        ModelHeatmapConfig(range="2d")


def test_positions_leave_the_map_once_the_price_reaches_them():
    # Model 3 opens 5x/10x/20x positions (30/40/30%) at each close: longs liquidate 20%, 10%
    # and 5% below. The second candle's low of 94 liquidates the 20x longs opened at 100 before
    # it; the 20x longs opened at or after it survive.
    candles = pd.DataFrame(
        {
            "time": [0, 60_000, 120_000],
            "open": [100.0, 100.0, 100.0],
            "high": [100.0, 100.0, 100.0],
            "low": [100.0, 94.0, 100.0],
            "close": [100.0, 100.0, 100.0],
            "volume_usd": [1000.0, 1000.0, 1000.0],
        }
    )
    heat = model_heatmap(candles, model=3)
    value = np.zeros((3, len(heat.y_axis)))
    for x, y, usd in heat.cells:
        value[int(x), int(y)] = usd
    at = {p: int(np.abs(heat.y_axis - p).argmin()) for p in (95.0, 90.0, 110.0)}
    per_candle = 1000 * OPEN_SHARE * 0.5  # half of the new notional is long, half short
    assert value[:, at[95.0]] == pytest.approx(np.array([1, 1, 2]) * per_candle * 0.3)
    assert value[:, at[90.0]] == pytest.approx(np.array([1, 2, 3]) * per_candle * 0.4)
    assert value[:, at[110.0]] == pytest.approx(np.array([1, 2, 3]) * per_candle * 0.4)


def test_the_simulator_serves_the_heatmap_shape(sim: SimulatorServer):
    client = CoinGlassClient(sim.base_url, None, "professional")
    try:
        data = client.get(heatmap_path(1), {"symbol": "BTC", "range": "24h"})
        pair = client.get(
            "/api/futures/liquidation/heatmap/model2",
            {"exchange": "Binance", "symbol": "BTCUSDT", "range": "12h"},
        )
    finally:
        client.close()
    interval, count = HEATMAP_RANGES["24h"]
    candles = data["price_candlesticks"]
    assert len(candles) == count
    times = [c[0] for c in candles]
    assert all(isinstance(t, int) and t < 10**11 for t in times)  # seconds
    assert np.diff(times).tolist() == [interval // 1000] * (count - 1)
    assert all(isinstance(v, str) for c in candles for v in c[1:])
    assert all(isinstance(v, float) for v in data["y_axis"])
    assert len(data["liquidation_leverage_data"]) > 100
    table = reshape(data, "BTC", 1, "24h")
    assert table.num_rows == len(data["liquidation_leverage_data"])
    assert len(pair["price_candlesticks"]) == HEATMAP_RANGES["12h"][1]


def test_the_simulator_rejects_an_unknown_range(sim: SimulatorServer):
    response = sim.handle("GET", f"{heatmap_path(1)}?symbol=BTC&range=2d")
    assert b"range must be one of 12h" in response.body


def materialize(settings: Settings, config: dict | None = None):
    asset = build_model_heatmap(settings)
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [asset],
            resources=build_resources(settings),
            instance=instance,
            run_config={"ops": {ASSET: {"config": config or {}}}},
            raise_on_error=False,
        )


def test_materializes_on_professional(settings: Settings):
    result = materialize(settings, {"model": 2, "range": "12h"})
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["model"].value == 2
    assert metadata["heatmap"].value.startswith(f"![{ASSET}](data:image/png;base64,")
    today = datetime.now(UTC).date()
    stored = Lake(settings.data_dir).read_days(ASSET, [today])
    assert stored is not None
    assert stored.num_rows == metadata["dagster/row_count"].value > 0
    assert set(stored["symbol"].to_pylist()) == {"BTC", "ETH"}
    assert set(stored["range"].to_pylist()) == {"12h"}
    assert Path(Lake(settings.data_dir).file(ASSET, today, "heatmap.png")).exists()


def test_skipped_not_failed_below_professional(env: dict[str, str]):
    settings = Settings.from_env({**env, "CG_PLAN": "standard"})
    result = materialize(settings)
    assert result.success
    assert result.get_asset_materialization_events() == []
    [observation] = result.get_asset_observation_events()
    reason = observation.asset_observation_data.asset_observation.metadata["skipped"].value
    assert "needs the Professional plan and CG_PLAN=standard" in reason
    assert not Lake(settings.data_dir).has_data(ASSET)


def test_skipped_when_the_key_is_below_professional(env: dict[str, str], market: SyntheticMarket):
    with SimulatorServer(market, plan="standard", require_key=False) as standard:
        settings = Settings.from_env({**env, "CG_API_BASE_URL": standard.base_url})
        result = materialize(settings)
    assert result.success
    assert result.get_asset_materialization_events() == []
    [observation] = result.get_asset_observation_events()
    reason = observation.asset_observation_data.asset_observation.metadata["skipped"].value
    assert "Upgrade plan" in reason
    assert "CG_PLAN=professional" in reason
