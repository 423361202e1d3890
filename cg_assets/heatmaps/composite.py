"""`composite_heatmap`: price zones ranked by liquidations, open-interest build-up and swings.

For each coin and each window end (every `step_minutes` from the day's 00:00 up to now; a day's
partition holds the windows ending in [00:00, 24:00)), the trailing window of `window_minutes`
is laid on one price grid relative to the coin's reference price at the window's end (the rule
of `liquidation_heatmap`: median close of the latest bar closed by then). A window whose latest
bar closed more than max(window, CG_INTERVAL) before its end is skipped: a stale price would
put the zones in the wrong place. Per bucket of that grid:

- `liq_norm`: the USD liquidated in the bucket during the window, min-max normalised over the
  window's buckets. It reads the liquidation_heatmap cells lying wholly in the window: a cell
  [ts, ts + bucket_minutes) counts once it has ended at or before the window's end (and began
  at or after its start), so a window ending 00:15 never sees an hour cell still running
  until 01:00. Cells are placed by their mid price;
- `oi_norm`: open-interest build-up attributed to where the price traded: each bar that closed
  in the window (or, when the window is shorter than a bar, the latest closed bar) spreads its
  OI increase (close - open, if positive: new positions, whose stops and liquidation levels sit
  nearby; closing flows add nothing) evenly over the buckets between its low and high; then
  min-max normalised;
- `swing`: closeness to a recent swing high or low. A pivot high is a bar whose high is the
  highest of the `pivot_span_bars` bars either side (a pivot low likewise); it counts once the
  bars after it have closed, within the last `pivot_lookback_bars` bars. `swing` falls linearly
  from 1 for a bucket holding a pivot level to 0 at `swing_reach_buckets` buckets away;
- `score = w_liq * liq_norm + w_oi * oi_norm + w_swing * swing`, weights summing to 1.

Min-max of a constant input does not divide by zero: every bucket then holds the peak, so it
scores 1 when that constant is positive and 0 when there is nothing at all.

Assembly (windows, re-bucketing, OI attribution) is DuckDB SQL over the lake; the maths are the
small numpy functions below, tested on their own.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Self

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from cg_assets.automation import follows_inputs
from cg_assets.coinglass.plans import DAY_MS, MINUTE_MS
from cg_assets.heatmaps.buckets import EDGE_TOLERANCE, check_day_divisor, check_grid
from cg_assets.heatmaps.gallery import publish_pictures
from cg_assets.heatmaps.inputs import coin_bars, extra_days, lookback_days
from cg_assets.heatmaps.liquidation import ASSET as LIQUIDATION_HEATMAP
from cg_assets.heatmaps.liquidation import GROUP, PRICES
from cg_assets.heatmaps.liquidation import SCHEMA as HEATMAP_SCHEMA
from cg_assets.heatmaps.pictures import Panel, render_png, utc_label
from cg_assets.market.series import MARKET_ASSETS_BY_NAME
from cg_assets.partitions import daily_partitions, days_between, lookback, to_ms
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings
from cg_assets.storage import Lake
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import Column, column_schema, schema_of

ASSET = "composite_heatmap"
OPEN_INTEREST = "open_interest_ohlc"
WEIGHT_TOLERANCE = 1e-6
Columns = dict[str, np.ndarray]

COLUMNS: tuple[Column, ...] = (
    Column("ts", pa.timestamp("ms", tz="UTC"), "End of the trailing window, UTC"),
    Column("symbol", pa.string(), "Coin ticker, e.g. BTC"),
    Column("bucket", pa.int64(), "Price bucket relative to ref_price at the window's end"),
    Column("price_low", pa.float64(), "Bucket's lower bound (inclusive), USD"),
    Column("price_high", pa.float64(), "Bucket's upper bound (exclusive), USD"),
    Column("liq_norm", pa.float64(), "Liquidated USD in the window, min-max normalised, 0..1"),
    Column("oi_norm", pa.float64(), "OI build-up where price traded, min-max normalised, 0..1"),
    Column("swing", pa.float64(), "Closeness to a recent pivot high/low, 0..1"),
    Column("score", pa.float64(), "w_liq*liq_norm + w_oi*oi_norm + w_swing*swing, 0..1"),
    Column("window_minutes", pa.int64(), "Length of the trailing window, minutes"),
    Column("ref_price", pa.float64(), "Coin price the buckets are measured from, USD"),
    Column("liq_usd", pa.float64(), "Liquidated USD in the bucket during the window"),
    Column("oi_build_usd", pa.float64(), "OI increase attributed to the bucket, USD"),
)
SCHEMA = schema_of(COLUMNS)

CHECKS = {
    SCHEMA_CHECK: "Columns and types match the contract.",
    "scores_in_range": "liq_norm, oi_norm, swing and score all lie in [0, 1].",
}
# Read back from the stored days: a value the run computed right but stored wrong fails too.
CHECK_SQL = {
    "scores_in_range": "SELECT count(*) FROM rows WHERE NOT coalesce("
    + " AND ".join(f"{c} BETWEEN 0 AND 1" for c in ("liq_norm", "oi_norm", "swing", "score"))
    + ", false)",
}
_PRICE_SCHEMA = MARKET_ASSETS_BY_NAME[PRICES].schema
_OI_SCHEMA = MARKET_ASSETS_BY_NAME[OPEN_INTEREST].schema

# Views: windows(symbol, end_ms), coin_bars (inputs.COIN_BARS_SQL), liquidation_heatmap,
# open_interest_ohlc. One row per (coin, window end, bucket) holding liquidations or traded.
# A heatmap cell is read only once it has ended (ts + bucket_minutes) by the window's end; a
# cell stored before `bucket_minutes` existed has no known end and is not read.
# A window whose latest bar closed more than max(window, bar) before its end is left out: its
# price would be stale, and a signal read from it would point at the wrong zone.
COMPOSITE_SQL = """
WITH refs AS (
    SELECT w.symbol, w.end_ms, b.close AS ref_price, b.close_ms AS last_close_ms
    FROM windows AS w
    ASOF JOIN coin_bars AS b ON w.symbol = b.symbol AND b.close_ms <= w.end_ms
    WHERE b.close_ms > w.end_ms - $fresh_ms
),
liq AS (
    SELECT
        r.symbol,
        r.end_ms,
        CAST(floor(((h.price_low + h.price_high) / 2 / r.ref_price - 1) / $grid + $edge)
             AS BIGINT) AS bucket,
        h.total_usd AS liq_usd
    FROM refs AS r
    JOIN liquidation_heatmap AS h
        ON h.symbol = r.symbol
        AND epoch_ms(h.ts) >= r.end_ms - $window_ms
        AND epoch_ms(h.ts) + h.bucket_minutes * $minute_ms <= r.end_ms
),
traded AS (
    SELECT
        r.symbol,
        r.end_ms,
        b.ts_ms,
        CAST(floor((b.low / r.ref_price - 1) / $grid + $edge) AS BIGINT) AS lo,
        CAST(floor((b.high / r.ref_price - 1) / $grid + $edge) AS BIGINT) AS hi
    FROM refs AS r
    JOIN coin_bars AS b
        ON b.symbol = r.symbol
        AND b.close_ms <= r.end_ms
        AND (b.close_ms > r.end_ms - $window_ms OR b.close_ms = r.last_close_ms)
),
oi AS (
    SELECT
        t.symbol,
        t.end_ms,
        unnest(range(t.lo, t.hi + 1)) AS bucket,
        greatest(coalesce(o.close - o.open, 0), 0) / (t.hi - t.lo + 1) AS oi_usd
    FROM traded AS t
    LEFT JOIN open_interest_ohlc AS o
        ON o.symbol = t.symbol AND epoch_ms(o.ts) = t.ts_ms
),
parts AS (
    SELECT symbol, end_ms, bucket, liq_usd, 0.0 AS oi_usd FROM liq
    UNION ALL
    SELECT symbol, end_ms, bucket, 0.0 AS liq_usd, oi_usd FROM oi
)
SELECT
    p.symbol,
    p.end_ms,
    p.bucket,
    r.ref_price,
    sum(p.liq_usd) AS liq_usd,
    sum(p.oi_usd) AS oi_usd
FROM parts AS p
JOIN refs AS r ON p.symbol = r.symbol AND p.end_ms = r.end_ms
GROUP BY p.symbol, p.end_ms, p.bucket, r.ref_price
ORDER BY p.symbol, p.end_ms, p.bucket
"""

BARS_SQL = "SELECT symbol, ts_ms, close_ms, high, low FROM coin_bars ORDER BY symbol, ts_ms"


@dataclass(frozen=True)
class Weights:
    liq: float = 0.6
    oi: float = 0.3
    swing: float = 0.1

    def __post_init__(self) -> None:
        for name, value in (("w_liq", self.liq), ("w_oi", self.oi), ("w_swing", self.swing)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}={value!r}: a weight must lie in [0, 1]")
        total = self.liq + self.oi + self.swing
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(
                f"weights must sum to 1: w_liq={self.liq} + w_oi={self.oi}"
                f" + w_swing={self.swing} = {total:g}"
            )


@dataclass(frozen=True)
class SwingParams:
    lookback_bars: int = 48
    span_bars: int = 2
    reach_buckets: float = 4.0

    def __post_init__(self) -> None:
        if self.span_bars < 1:
            raise ValueError(f"pivot_span_bars={self.span_bars!r}: must be at least 1")
        if self.lookback_bars < 2 * self.span_bars + 1:
            raise ValueError(
                f"pivot_lookback_bars={self.lookback_bars!r}: must hold a pivot and its"
                f" neighbours, at least 2 * pivot_span_bars + 1 = {2 * self.span_bars + 1}"
            )
        if not (math.isfinite(self.reach_buckets) and self.reach_buckets > 0):
            raise ValueError(f"swing_reach_buckets={self.reach_buckets!r}: must be > 0")


def min_max(values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """`values` scaled to [0, 1] within each group (all one group when `groups` is None).

    A group whose values are all equal maps to 1 when they are positive (each is the peak) and
    to 0 otherwise, instead of dividing by zero.
    """
    values = np.asarray(values, dtype=np.float64)
    if groups is None:
        ids = np.zeros(len(values), dtype=np.int64)
    else:
        ids = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    count = int(ids.max()) + 1 if len(ids) else 0
    lo = np.full(count, np.inf)
    hi = np.full(count, -np.inf)
    np.minimum.at(lo, ids, values)
    np.maximum.at(hi, ids, values)
    lo, hi = lo[ids], hi[ids]
    spread = hi - lo
    flat = np.where(hi > 0, 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(spread > 0, (values - lo) / spread, flat)
    return np.clip(scaled, 0.0, 1.0)


def pivots(high: np.ndarray, low: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of pivot highs and pivot lows: bars whose high (low) is the extreme of the
    `span` bars on either side. Bars without `span` neighbours on both sides are not pivots."""
    n = len(high)
    is_high = np.zeros(n, dtype=bool)
    is_low = np.zeros(n, dtype=bool)
    if n < 2 * span + 1:
        return is_high, is_low
    windows_high = np.lib.stride_tricks.sliding_window_view(high, 2 * span + 1)
    windows_low = np.lib.stride_tricks.sliding_window_view(low, 2 * span + 1)
    is_high[span : n - span] = high[span : n - span] >= windows_high.max(axis=1)
    is_low[span : n - span] = low[span : n - span] <= windows_low.min(axis=1)
    return is_high, is_low


def swing_proximity(
    low: np.ndarray, high: np.ndarray, levels: np.ndarray, width: float, reach: float
) -> np.ndarray:
    """For price bands [low, high): 1 where a level lies in the band, falling linearly to 0
    at `reach` band widths (`width` in price) away; 0 everywhere without levels."""
    if len(levels) == 0 or len(low) == 0:
        return np.zeros(len(low))
    below = low[:, None] - levels[None, :]
    above = levels[None, :] - high[:, None]
    gap = np.maximum(np.maximum(below, above), 0.0).min(axis=1)
    return np.clip(1.0 - gap / (width * reach), 0.0, 1.0)


def composite_score(
    liq_norm: np.ndarray, oi_norm: np.ndarray, swing: np.ndarray, weights: Weights
) -> np.ndarray:
    score = weights.liq * liq_norm + weights.oi * oi_norm + weights.swing * swing
    return np.clip(score, 0.0, 1.0)


class CompositeHeatmapConfig(dg.Config):
    """Window, grid, weights and swing detection of the composite; validated before running."""

    window_minutes: int = Field(default=60, description="Trailing window, minutes (<= 1440).")
    step_minutes: int = Field(
        default=15, description="A window ends every this many minutes; must divide a day."
    )
    grid: float = Field(default=0.0025, description="Bucket width as a fraction of ref_price.")
    w_liq: float = Field(default=0.6, description="Weight of liq_norm; weights sum to 1.")
    w_oi: float = Field(default=0.3, description="Weight of oi_norm; weights sum to 1.")
    w_swing: float = Field(default=0.1, description="Weight of swing; weights sum to 1.")
    pivot_lookback_bars: int = Field(
        default=48, description="Pivots count within this many price_ohlc bars back."
    )
    pivot_span_bars: int = Field(
        default=2, description="A pivot is the extreme of this many bars on either side."
    )
    swing_reach_buckets: float = Field(
        default=4.0, description="swing falls to 0 this many buckets away from a pivot."
    )

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not 1 <= self.window_minutes <= 1440:
            raise ValueError(f"window_minutes={self.window_minutes!r}: expected 1..1440")
        check_day_divisor("step_minutes", self.step_minutes)
        check_grid("grid", self.grid)
        self.weights()
        self.swing_params()
        return self

    def weights(self) -> Weights:
        return Weights(self.w_liq, self.w_oi, self.w_swing)

    def swing_params(self) -> SwingParams:
        return SwingParams(self.pivot_lookback_bars, self.pivot_span_bars, self.swing_reach_buckets)


def window_ends(days: list[date], step_minutes: int, now_ms: int) -> list[int]:
    """Window ends in [day start, day end) every `step_minutes`, none after `now_ms`."""
    step = step_minutes * MINUTE_MS
    first = to_ms(datetime.combine(days[0], datetime.min.time(), UTC))
    last = first + len(days) * DAY_MS
    return list(range(first, min(last, now_ms + 1), step))


def raw_components(
    con: duckdb.DuckDBPyConnection, *, window_ms: int, grid: float, interval_ms: int
) -> Columns:
    """COMPOSITE_SQL's rows as arrays: symbol, end_ms, bucket, ref_price, liq_usd, oi_usd,
    sorted by (symbol, end_ms, bucket)."""
    params = {
        "window_ms": window_ms,
        "minute_ms": MINUTE_MS,
        "fresh_ms": max(window_ms, interval_ms),
        "grid": grid,
        "edge": EDGE_TOLERANCE,
    }
    return _arrays(con.sql(COMPOSITE_SQL, params=params))


def _arrays(relation: duckdb.DuckDBPyRelation) -> Columns:
    return {name: np.asarray(values) for name, values in relation.fetchnumpy().items()}


def pivot_levels(bars: Columns, span: int) -> dict[str, Columns]:
    """Pivot levels per coin from `coin_bars` rows (sorted by symbol, ts_ms): ts_ms (the pivot
    bar), confirm_ms (when the `span` bars after it had closed) and level (its high or low)."""
    found: dict[str, Columns] = {}
    for symbol in np.unique(bars["symbol"]):
        coin = bars["symbol"] == symbol
        high, low = bars["high"][coin], bars["low"][coin]
        is_high, is_low = pivots(high, low, span)
        confirm = np.roll(bars["close_ms"][coin], -span)
        ts = bars["ts_ms"][coin]
        found[str(symbol)] = {
            "ts_ms": np.concatenate([ts[is_high], ts[is_low]]),
            "confirm_ms": np.concatenate([confirm[is_high], confirm[is_low]]),
            "level": np.concatenate([high[is_high], low[is_low]]),
        }
    return found


def composite_table(
    raw: Columns,
    levels: dict[str, Columns],
    *,
    grid: float,
    window_minutes: int,
    weights: Weights,
    swing: SwingParams,
    interval_ms: int,
) -> pa.Table:
    """The composite rows from `raw_components` and `pivot_levels`, in SCHEMA."""
    if not len(raw["ref_price"]):  # no window had a reference price: nothing to score
        return SCHEMA.empty_table()
    symbol, end_ms = raw["symbol"], raw["end_ms"].astype(np.int64)
    ref = raw["ref_price"].astype(np.float64)
    bucket = raw["bucket"].astype(np.int64)
    low = ref * (1 + bucket * grid)
    high = ref * (1 + (bucket + 1) * grid)
    starts = np.flatnonzero(
        np.concatenate([[True], (symbol[1:] != symbol[:-1]) | (end_ms[1:] != end_ms[:-1])])
    )
    groups = np.zeros(len(ref), dtype=np.int64)
    groups[starts[1:]] = 1
    groups = np.cumsum(groups)
    liq_usd = raw["liq_usd"].astype(np.float64)
    oi_usd = raw["oi_usd"].astype(np.float64)
    liq_norm = min_max(liq_usd, groups)
    oi_norm = min_max(oi_usd, groups)
    swing_values = np.zeros(len(ref))
    lookback_ms = swing.lookback_bars * interval_ms
    for first, stop in zip(starts, [*starts[1:], len(ref)], strict=True):
        coin = levels.get(str(symbol[first]))
        if coin is None:
            continue
        end = end_ms[first]
        usable = (coin["confirm_ms"] <= end) & (coin["ts_ms"] >= end - lookback_ms)
        swing_values[first:stop] = swing_proximity(
            low[first:stop],
            high[first:stop],
            coin["level"][usable],
            float(ref[first]) * grid,
            swing.reach_buckets,
        )
    table = pa.table(
        {
            "ts": pa.array(end_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "symbol": pa.array(symbol.tolist(), pa.string()),
            "bucket": pa.array(bucket, pa.int64()),
            "price_low": low,
            "price_high": high,
            "liq_norm": liq_norm,
            "oi_norm": oi_norm,
            "swing": swing_values,
            "score": composite_score(liq_norm, oi_norm, swing_values, weights),
            "window_minutes": pa.array(np.full(len(ref), window_minutes), pa.int64()),
            "ref_price": ref,
            "liq_usd": liq_usd,
            "oi_build_usd": oi_usd,
        }
    )
    return table.cast(SCHEMA)


def compute_composite(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    days: list[date],
    symbols: tuple[str, ...],
    config: CompositeHeatmapConfig,
    interval_ms: int,
    now_ms: int,
) -> pa.Table:
    """The composite heatmap of `days` for `symbols`, read from the lake."""
    window_ms = config.window_minutes * MINUTE_MS
    price_span = config.pivot_lookback_bars * interval_ms + window_ms + interval_ms
    ends = window_ends(days, config.step_minutes, now_ms)
    lake.attach(con, LIQUIDATION_HEATMAP, lookback_days(days, window_ms), HEATMAP_SCHEMA)
    lake.attach(con, PRICES, lookback_days(days, price_span), _PRICE_SCHEMA)
    lake.attach(con, OPEN_INTEREST, lookback_days(days, window_ms), _OI_SCHEMA)
    coin_bars(con, interval_ms)
    windows = pa.table(
        {
            "symbol": pa.array([s for s in symbols for _ in ends], pa.string()),
            "end_ms": pa.array([e for _ in symbols for e in ends], pa.int64()),
        }
    )
    con.register("windows", windows)
    raw = raw_components(con, window_ms=window_ms, grid=config.grid, interval_ms=interval_ms)
    bars = _arrays(con.sql(BARS_SQL))
    return composite_table(
        raw,
        pivot_levels(bars, config.pivot_span_bars),
        grid=config.grid,
        window_minutes=config.window_minutes,
        weights=config.weights(),
        swing=config.swing_params(),
        interval_ms=interval_ms,
    )


def composite_panels(table: pa.Table, step_ms: int) -> list[Panel]:
    """One picture panel per coin: colour = score, the reference price drawn over it."""
    panels = []
    for symbol in sorted(set(table["symbol"].to_pylist())):
        coin = table.filter(pc.equal(table["symbol"], symbol))
        ts = pc.cast(coin["ts"], pa.int64()).to_numpy()
        refs = coin.group_by("ts").aggregate([("ref_price", "max")]).sort_by("ts")
        path = refs["ref_price_max"].to_numpy()
        panels.append(
            Panel(
                title=f"{symbol} composite score, windows ending {utc_label(int(ts.min()))}"
                f" .. {utc_label(int(ts.max()))}",
                x_ms=ts,
                width_ms=step_ms,
                y_low=coin["price_low"].to_numpy(),
                y_high=coin["price_high"].to_numpy(),
                value=coin["score"].to_numpy(),
                path_ms=pc.cast(refs["ts"], pa.int64()).to_numpy(),
                path_price=path,
                current_price=float(path[-1]),
            )
        )
    return panels


def build_composite_heatmap(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description=(
            "Price zones per coin scored by liquidation mass, open-interest build-up and"
            " closeness to swing highs/lows over a trailing window, with a picture per day."
        ),
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "duckdb"},
        deps=[
            # A window of at most a day (window_minutes <= 1440) reaches into the day before.
            dg.AssetDep(LIQUIDATION_HEATMAP, partition_mapping=lookback(1)),
            # Pivots need pivot_lookback_bars (the default) + 1 bars before the window.
            dg.AssetDep(
                PRICES,
                partition_mapping=lookback(
                    extra_days((SwingParams().lookback_bars + 1) * settings.interval_ms + DAY_MS)
                ),
            ),
            dg.AssetDep(OPEN_INTEREST, partition_mapping=lookback(1)),
        ],
        # Until the day's first bar closes (01:00 at 1h) yesterday's prices and OI place the
        # windows, so only the day's liquidation heatmap has to exist.
        automation_condition=follows_inputs(latest_day_of=[LIQUIDATION_HEATMAP]),
        metadata={"dagster/column_schema": column_schema(COLUMNS)},
        check_specs=[
            dg.AssetCheckSpec(name, asset=ASSET, description=text) for name, text in CHECKS.items()
        ],
    )
    def composite_heatmap(
        context: dg.AssetExecutionContext, config: CompositeHeatmapConfig, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        now_ms = to_ms(datetime.now(UTC))
        with lake.connect() as con:
            table = compute_composite(
                con, lake.lake, days, settings.symbols, config, settings.interval_ms, now_ms
            )
        published = lake.publish(ASSET, table, days)
        hot = pc.sum(pc.greater_equal(table["score"], 0.75)).as_py() or 0
        metadata = {
            **published.metadata,
            "windows": len(set(pc.cast(table["ts"], pa.int64()).to_pylist())),
            "buckets_scoring_0.75_or_more": hot,
            "window_minutes": config.window_minutes,
            "weights": f"liq {config.w_liq}, oi {config.w_oi}, swing {config.w_swing}",
        }
        pictures = publish_pictures(
            lake,
            ASSET,
            table,
            days,
            lambda part: render_png(
                composite_panels(part, config.step_minutes * MINUTE_MS), "score", score=True
            ),
        )
        metadata.update(pictures)
        if not pictures:
            context.log.warning(
                f"no composite rows for {days[0]}..{days[-1]}: no {PRICES} bars for"
                f" {', '.join(settings.symbols)} yet, or every window ends in the future"
            )
        yield dg.MaterializeResult(metadata=metadata)
        yield from lake.check_results(ASSET, days, SCHEMA, CHECK_SQL)

    return composite_heatmap
