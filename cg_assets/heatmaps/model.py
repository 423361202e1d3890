"""`coinglass_liquidation_heatmap`: CoinGlass's own model heatmap, as tidy rows.

The aggregated-heatmap endpoints (Professional plan and up) answer with three parallel
structures (reference §5.6): `y_axis` (price levels), `liquidation_leverage_data` rows
`[candle index, level index, USD]` and `price_candlesticks` rows
`[time, open, high, low, close, volume]` whose time is in SECONDS, unlike every other V4
time, with prices as strings. `reshape` turns them into one row per (candle, level):
ts (ms, UTC), symbol, price_level, liquidation_usd.

The asset is a snapshot of "now" over the configured range, so it is not partitioned by day:
each run replaces the lake file of the current UTC day (`date=<today>`), whose rows carry the
model and range they came from. On plans below Professional the endpoint cannot be called, so
the asset is skipped rather than failed: it is declared with `output_required=False`, and a run
on such a plan logs why, records an AssetObservation with the reason on the asset's page, and
yields no materialization, so the run succeeds and nothing downstream sees a stale or empty
table as new data.
"""

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from cg_assets.coinglass import CoinGlassPlanError
from cg_assets.coinglass.plans import Plan
from cg_assets.heatmaps.gallery import PICTURE, picture_metadata
from cg_assets.heatmaps.liquidation import GROUP
from cg_assets.heatmaps.pictures import Panel, render_png, utc_label
from cg_assets.resources import COINGLASS_POOL, CoinGlassResource, LakeResource
from cg_assets.settings import Settings
from cg_assets.tables import Column, column_schema, schema_of

ASSET = "coinglass_liquidation_heatmap"
RANGES = ("12h", "24h", "3d", "7d", "30d", "90d", "180d", "1y")
MODELS = (1, 2, 3)
# Candle times beyond this are milliseconds whatever the docs say (in seconds it is the year
# 5138), so a switch of unit on the server cannot silently shift every candle.
_SECONDS_LIMIT = 10**11

COLUMNS: tuple[Column, ...] = (
    Column("ts", pa.timestamp("ms", tz="UTC"), "Candle start, UTC"),
    Column("symbol", pa.string(), "Coin ticker, e.g. BTC"),
    Column("price_level", pa.float64(), "Price level of the model, USD"),
    Column("liquidation_usd", pa.float64(), "USD the model expects liquidated at the level"),
    Column("model", pa.int64(), "CoinGlass heatmap model: 1, 2 or 3"),
    Column("range", pa.string(), "Range the snapshot covers, e.g. 3d"),
)
SCHEMA = schema_of(COLUMNS)


def heatmap_path(model: int) -> str:
    return f"/api/futures/liquidation/aggregated-heatmap/model{model}"


class ModelHeatmapConfig(dg.Config):
    """Which CoinGlass model and range to fetch."""

    model: int = Field(default=1, description="CoinGlass heatmap model: 1, 2 or 3.")
    range: str = Field(default="3d", description=f"One of {', '.join(RANGES)}.")

    @field_validator("model")
    @classmethod
    def _model(cls, value: int) -> int:
        if value not in MODELS:
            raise ValueError(f"model={value!r}: expected 1, 2 or 3")
        return value

    @field_validator("range")
    @classmethod
    def _range(cls, value: str) -> str:
        if value not in RANGES:
            raise ValueError(f"range={value!r}: expected one of {', '.join(RANGES)}")
        return value


def candle_ms(times: np.ndarray) -> np.ndarray:
    """Candle times in ms from the heatmap's seconds (see _SECONDS_LIMIT)."""
    times = np.asarray(times, dtype=np.int64)
    return np.where(times < _SECONDS_LIMIT, times * 1000, times)


def candles(data: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(start ms, close) of each candle of a heatmap response."""
    rows = data.get("price_candlesticks") or []
    if any(len(r) < 5 for r in rows):
        raise ValueError("price_candlesticks: expected rows [time, open, high, low, close, ...]")
    times = candle_ms(np.array([int(float(r[0])) for r in rows], dtype=np.int64))
    return times, np.array([float(r[4]) for r in rows], dtype=np.float64)


def reshape(data: Mapping[str, Any], symbol: str, model: int, range_label: str) -> pa.Table:
    """The response's cells as tidy rows in SCHEMA, sorted by time then price level.

    A cell pointing outside `y_axis` or `price_candlesticks` is a malformed payload: it raises
    ValueError naming the field and the offending index instead of being dropped silently.
    """
    levels = np.array([float(v) for v in data.get("y_axis") or []], dtype=np.float64)
    times, _ = candles(data)
    rows = data.get("liquidation_leverage_data") or []
    if any(len(r) < 3 for r in rows):
        raise ValueError("liquidation_leverage_data: expected rows [candle, level, USD]")
    cells = np.array([[float(v) for v in r[:3]] for r in rows], dtype=np.float64).reshape(-1, 3)
    x, y, usd = cells[:, 0].astype(np.int64), cells[:, 1].astype(np.int64), cells[:, 2]
    for name, index, size, target in (
        ("candle", x, len(times), "price_candlesticks"),
        ("level", y, len(levels), "y_axis"),
    ):
        bad = index[(index < 0) | (index >= size)]
        if len(bad):
            raise ValueError(
                f"liquidation_leverage_data: {name} index {int(bad[0])} outside"
                f" {target} (length {size})"
            )
    order = np.lexsort((y, x))
    table = pa.table(
        {
            "ts": pa.array(times[x[order]], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "symbol": pa.array([symbol] * len(order), pa.string()),
            "price_level": levels[y[order]],
            "liquidation_usd": usd[order],
            "model": pa.array(np.full(len(order), model), pa.int64()),
            "range": pa.array([range_label] * len(order), pa.string()),
        }
    )
    return table.cast(SCHEMA)


def model_panel(table: pa.Table, symbol: str, data: Mapping[str, Any]) -> Panel:
    """A picture panel of one coin's model heatmap, the candles' closes drawn over it."""
    coin = table.filter(pc.equal(table["symbol"], symbol))
    times, closes = candles(data)
    levels = np.unique(coin["price_level"].to_numpy())
    half = float(np.diff(levels).min()) / 2 if len(levels) > 1 else float(levels[0]) * 1e-3
    ts = pc.cast(coin["ts"], pa.int64()).to_numpy()
    price = coin["price_level"].to_numpy()
    width = int(np.diff(times).min()) if len(times) > 1 else 60_000
    return Panel(
        title=f"{symbol} CoinGlass model {coin['model'][0]} heatmap, {coin['range'][0]}, to"
        f" {utc_label(int(times[-1]) + width)}",
        x_ms=ts,
        width_ms=width,
        y_low=price - half,
        y_high=price + half,
        value=coin["liquidation_usd"].to_numpy(),
        path_ms=times,
        path_price=closes,
        current_price=float(closes[-1]),
    )


def build_model_heatmap(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description=(
            "CoinGlass's model liquidation heatmap per coin (levels x candles), a snapshot of"
            " now over the configured range. Needs the Professional plan; skipped below it."
        ),
        kinds={"parquet", "duckdb"},
        output_required=False,
        metadata={"dagster/column_schema": column_schema(COLUMNS)},
        pool=COINGLASS_POOL,
    )
    def coinglass_liquidation_heatmap(
        context: dg.AssetExecutionContext,
        config: ModelHeatmapConfig,
        coinglass: CoinGlassResource,
        lake: LakeResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        path = heatmap_path(config.model)
        if settings.plan.rank < Plan.PROFESSIONAL.rank:
            yield _skip(
                context,
                f"skipped: {path} needs the Professional plan and CG_PLAN={settings.plan.value};"
                " set CG_PLAN=professional (with a key of that plan) to fetch it",
            )
            return
        responses: dict[str, Mapping[str, Any]] = {}
        try:
            for symbol in settings.symbols:
                params = {"symbol": symbol, "range": config.range}
                responses[symbol] = coinglass.client.get(path, params)
        except CoinGlassPlanError as exc:
            yield _skip(
                context,
                f"skipped: CoinGlass refused {path} ({exc.msg}): the API key's plan is below"
                f" Professional although CG_PLAN={settings.plan.value}",
            )
            return
        parts = [
            reshape(data, symbol, config.model, config.range) for symbol, data in responses.items()
        ]
        table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
        today = datetime.now(UTC).date()
        published = lake.publish(ASSET, table, [today], split_on=None)
        metadata: dict[str, Any] = {
            **published.metadata,
            "model": config.model,
            "range": config.range,
            "lake_file": dg.MetadataValue.path(published.files[today]),
        }
        panels = [
            model_panel(table, symbol, data)
            for symbol, data in responses.items()
            if table.num_rows and pc.any(pc.equal(table["symbol"], symbol)).as_py()
        ]
        if panels:
            png = render_png(panels, "USD at level")
            file = lake.lake.write_bytes(ASSET, today, PICTURE, png)
            metadata.update(picture_metadata(png, ASSET, file))
        yield dg.MaterializeResult(metadata=metadata)

    return coinglass_liquidation_heatmap


def _skip(context: dg.AssetExecutionContext, reason: str) -> dg.AssetObservation:
    context.log.warning(reason)
    return dg.AssetObservation(asset_key=ASSET, metadata={"skipped": reason})
