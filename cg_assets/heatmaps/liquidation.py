"""`liquidation_heatmap`: where liquidations happened, per coin, time bucket and price bucket.

Reference price (the exact rule): for a time bucket [t0, t0 + bucket) of a coin, take the
latest `price_ohlc` bar whose close time (bar start + CG_INTERVAL) is at or before the END of
the time bucket; `ref_price` is the median of the closes the exchanges reported for that bar
(for an even count the lower of the two middle ones, so it is a price an exchange printed).
A bar still open at the bucket's end is never used, so a heatmap computed later agrees with one
computed live: no look-ahead. Events of a coin with no such bar yet are left out of the cells
and counted in the `unpriced_events` metadata (and the run log).

Everything is one DuckDB query over the lake's Parquet files: the reference prices are found
once per (coin, time bucket) of the range with an ASOF join, then every event is placed and the
cells summed in a single pass. No Python touches a row.
"""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from cg_assets.coinglass.plans import MINUTE_MS
from cg_assets.heatmaps.buckets import EDGE_TOLERANCE, check_day_divisor, check_grid
from cg_assets.heatmaps.inputs import coin_bars, extra_days, lake_view, lookback_days
from cg_assets.heatmaps.pictures import Panel, markdown_image, render_png, utc_label, write_png
from cg_assets.liquidations.assets import ASSET as ORDERS
from cg_assets.liquidations.orders import SCHEMA as ORDERS_SCHEMA
from cg_assets.market.assets import column_schema
from cg_assets.market.fetch import split_days
from cg_assets.market.series import MARKET_ASSETS_BY_NAME, Column
from cg_assets.partitions import daily_partitions, days_between, lookback, to_ms
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings
from cg_assets.storage import Lake

ASSET = "liquidation_heatmap"
GROUP = "heatmaps"
PRICES = "price_ohlc"
PICTURE = "heatmap.png"

COLUMNS: tuple[Column, ...] = (
    Column("ts", pa.timestamp("ms", tz="UTC"), "Start of the time bucket, UTC"),
    Column("symbol", pa.string(), "Coin ticker, e.g. BTC"),
    Column("bucket", pa.int64(), "Price bucket: floor((price / ref_price - 1) / grid)"),
    Column("grid", pa.float64(), "Bucket width as a fraction of ref_price (0.0025 = 0.25%)"),
    Column("ref_price", pa.float64(), "Coin price the buckets are measured from, USD"),
    Column("price_low", pa.float64(), "Bucket's lower bound (inclusive), USD"),
    Column("price_high", pa.float64(), "Bucket's upper bound (exclusive), USD"),
    Column("total_usd", pa.float64(), "USD liquidated in the cell (long_usd + short_usd)"),
    Column("long_usd", pa.float64(), "USD of long positions liquidated in the cell"),
    Column("short_usd", pa.float64(), "USD of short positions liquidated in the cell"),
    Column("events", pa.int64(), "Number of liquidations in the cell"),
)
SCHEMA = pa.schema([pa.field(c.name, c.type) for c in COLUMNS])
_PRICE_SCHEMA = MARKET_ASSETS_BY_NAME[PRICES].schema

# Views: liquidation_orders (the events), coin_bars (inputs.COIN_BARS_SQL). Events of a coin
# without a reference price yet come back once per (coin, time bucket) with a NULL bucket.
# The reference prices are looked up once per (coin, time bucket) of the range, a few thousand
# rows, and the events reach them by a hash join: far cheaper than an ASOF join over every
# event. epoch_us, unlike epoch_ms, is a plain integer read of a TIMESTAMPTZ.
HEATMAP_SQL = """
WITH slots AS (
    SELECT c.symbol, s.range AS t0
    FROM (SELECT DISTINCT symbol FROM coin_bars) AS c
    CROSS JOIN range($start_ms, $end_ms, $bucket_ms) AS s
),
refs AS (
    SELECT s.symbol, s.t0, b.close AS ref_price
    FROM slots AS s
    ASOF JOIN coin_bars AS b
        ON s.symbol = b.symbol AND b.close_ms <= s.t0 + $bucket_ms
),
events AS (
    SELECT
        symbol,
        epoch_us(ts) // $bucket_us * $bucket_ms AS t0,
        side = 'long' AS is_long,
        price,
        usd_value
    FROM liquidation_orders
    WHERE epoch_us(ts) >= $start_us AND epoch_us(ts) < $end_us
      AND side IN ('long', 'short')
),
cells AS (
    SELECT
        e.symbol,
        e.t0,
        CAST(floor((e.price / r.ref_price - 1) / $grid + $edge) AS BIGINT) AS bucket,
        any_value(r.ref_price) AS ref_price,
        sum(CASE WHEN e.is_long THEN e.usd_value ELSE 0 END) AS long_usd,
        sum(CASE WHEN e.is_long THEN 0 ELSE e.usd_value END) AS short_usd,
        count(*) AS events
    FROM events AS e
    LEFT JOIN refs AS r ON e.symbol = r.symbol AND e.t0 = r.t0
    GROUP BY e.symbol, e.t0, bucket
)
SELECT
    t0 AS ts,
    symbol,
    bucket,
    $grid AS grid,
    ref_price,
    ref_price * (1 + bucket * $grid) AS price_low,
    ref_price * (1 + (bucket + 1) * $grid) AS price_high,
    long_usd + short_usd AS total_usd,
    long_usd,
    short_usd,
    events
FROM cells
ORDER BY symbol, ts, bucket
"""

CHECK_SQL = {
    "usd_conserved": (
        "SELECT abs((SELECT coalesce(sum(usd_value), 0) FROM liquidation_orders"
        " WHERE epoch_us(ts) >= $start_us AND epoch_us(ts) < $end_us"
        " AND side IN ('long', 'short')) - $placed_usd - $unpriced_usd)"
        " > 1e-6 * greatest(1, $placed_usd)"
    ),
}


class LiquidationHeatmapConfig(dg.Config):
    """Cell size of the heatmap; both ends of it can be changed per run."""

    bucket_minutes: int = Field(
        default=1, description="Time bucket in minutes; must divide a day (1, 5, 15, 60, ...)."
    )
    grid: float = Field(
        default=0.0025, description="Price bucket width as a fraction of ref_price (0.0025)."
    )

    @field_validator("bucket_minutes")
    @classmethod
    def _bucket_minutes(cls, value: int) -> int:
        return check_day_divisor("bucket_minutes", value)

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: float) -> float:
        return check_grid("grid", value)


def heatmap_cells(
    con: duckdb.DuckDBPyConnection,
    *,
    start_ms: int,
    end_ms: int,
    bucket_ms: int,
    grid: float,
) -> pa.Table:
    """HEATMAP_SQL's rows (ts as epoch ms), unpriced slots included with a NULL bucket."""
    return con.sql(
        HEATMAP_SQL,
        params={
            "start_ms": start_ms,
            "end_ms": end_ms,
            "start_us": start_ms * 1000,
            "end_us": end_ms * 1000,
            "bucket_ms": bucket_ms,
            "bucket_us": bucket_ms * 1000,
            "grid": grid,
            "edge": EDGE_TOLERANCE,
        },
    ).to_arrow_table()


def split_unpriced(rows: pa.Table) -> tuple[pa.Table, int, float]:
    """(cells in SCHEMA, unpriced events, their USD) from `heatmap_cells`' rows."""
    priced = pc.is_valid(rows["bucket"])
    unpriced = rows.filter(pc.invert(priced))
    cells = rows.filter(priced)
    cells = cells.set_column(0, "ts", pc.cast(cells["ts"], pa.timestamp("ms", tz="UTC")))
    return (
        cells.cast(SCHEMA),
        int(pc.sum(unpriced["events"]).as_py() or 0),
        float(pc.sum(unpriced["total_usd"]).as_py() or 0.0),
    )


def open_inputs(lake: Lake, days: list[date], interval_ms: int) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the events of `days` and the price bars they may need."""
    con = duckdb.connect()
    lake_view(con, lake, ORDERS, days, ORDERS_SCHEMA)
    lake_view(con, lake, PRICES, lookback_days(days, interval_ms), _PRICE_SCHEMA)
    coin_bars(con, interval_ms)
    return con


def heatmap_panels(cells: pa.Table, bucket_ms: int) -> list[Panel]:
    """One picture panel per coin: colour = USD liquidated, the reference price drawn over it."""
    panels = []
    for symbol in sorted(set(cells["symbol"].to_pylist())):
        coin = cells.filter(pc.equal(cells["symbol"], symbol))
        ts = pc.cast(coin["ts"], pa.int64()).to_numpy()
        refs = coin.group_by("ts").aggregate([("ref_price", "max")]).sort_by("ts")
        path_ms = pc.cast(refs["ts"], pa.int64()).to_numpy()
        path = refs["ref_price_max"].to_numpy()
        panels.append(
            Panel(
                title=f"{symbol} liquidations, {utc_label(int(ts.min()))} .. "
                f"{utc_label(int(ts.max()))}",
                x_ms=ts,
                width_ms=bucket_ms,
                y_low=coin["price_low"].to_numpy(),
                y_high=coin["price_high"].to_numpy(),
                value=coin["total_usd"].to_numpy(),
                path_ms=path_ms,
                path_price=path,
                current_price=float(path[-1]),
            )
        )
    return panels


def build_liquidation_heatmap(settings: Settings) -> dg.AssetsDefinition:

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description=(
            "Liquidated USD per coin, time bucket and price bucket (a grid relative to the"
            " coin's last closed price), with a picture per day."
        ),
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "duckdb"},
        deps=[
            dg.AssetDep(ORDERS),
            dg.AssetDep(PRICES, partition_mapping=lookback(extra_days(settings.interval_ms))),
        ],
        metadata={"dagster/column_schema": column_schema(COLUMNS)},
        check_specs=[
            dg.AssetCheckSpec(
                "usd_conserved",
                asset=ASSET,
                description="Every liquidated dollar of the days is in a cell or counted as"
                " unpriced.",
            )
        ],
    )
    def liquidation_heatmap(
        context: dg.AssetExecutionContext, config: LiquidationHeatmapConfig, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        start_ms, end_ms = to_ms(window.start), to_ms(window.end)
        bucket_ms = config.bucket_minutes * MINUTE_MS
        con = open_inputs(lake.lake, days, settings.interval_ms)
        try:
            rows = heatmap_cells(
                con,
                start_ms=start_ms,
                end_ms=end_ms,
                bucket_ms=bucket_ms,
                grid=config.grid,
            )
            cells, unpriced, unpriced_usd = split_unpriced(rows)
            placed_usd = float(pc.sum(cells["total_usd"]).as_py() or 0.0)
            [(lost,)] = con.execute(
                CHECK_SQL["usd_conserved"],
                {
                    "start_us": start_ms * 1000,
                    "end_us": end_ms * 1000,
                    "placed_usd": placed_usd,
                    "unpriced_usd": unpriced_usd,
                },
            ).fetchall()
        finally:
            con.close()
        if unpriced:
            context.log.warning(
                f"{unpriced} liquidation(s) (${unpriced_usd:,.0f}) have no reference price yet:"
                f" no {PRICES} bar of their coin closed before them; materialize {PRICES} for"
                " those days and re-run"
            )
        pictures = {}
        for day, part in split_days(cells, days).items():
            path = lake.lake.write_day(ASSET, day, part)
            if part.num_rows:
                png = render_png(heatmap_panels(part, bucket_ms), "USD liquidated")
                pictures[day] = (png, write_png(path.with_name(PICTURE), png))
        views = lake.catalog.ensure_views([ASSET])
        metadata = {
            "dagster/row_count": cells.num_rows,
            "events": int(pc.sum(cells["events"]).as_py() or 0),
            "liquidated_usd": placed_usd,
            "unpriced_events": unpriced,
            "bucket_minutes": config.bucket_minutes,
            "grid": config.grid,
            "catalog": views.summary,
        }
        if pictures:
            day = max(pictures)
            png, file = pictures[day]
            metadata["heatmap"] = dg.MetadataValue.md(markdown_image(png, f"{ASSET} {day}"))
            metadata["picture_path"] = dg.MetadataValue.path(str(file))
            metadata["picture_bytes"] = len(png)
        yield dg.MaterializeResult(metadata=metadata)
        yield dg.AssetCheckResult(
            check_name="usd_conserved",
            passed=not lost,
            description="liquidated USD = cells + unpriced"
            if not lost
            else "cells and unpriced events do not add up to the days' liquidations",
            metadata={"placed_usd": placed_usd, "unpriced_usd": unpriced_usd},
        )

    return liquidation_heatmap
