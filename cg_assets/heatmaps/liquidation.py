"""`liquidation_heatmap`: where liquidations happened, per coin, time bucket and price bucket.

Reference price, the exact rule: a `price_ohlc` bar is usable for an event only once it has
closed (bar start + CG_INTERVAL) at or before the start of the event's own time bucket. The
cell [t0, t0 + bucket) of a coin therefore measures every event in it from the newest bar that
closed by t0, and `ref_price` is the median of the closes the exchanges reported for that bar
(for an even count the lower of the two middle ones, so it is a price an exchange printed). No
event is priced against a close that became known after its bucket began, whatever the bucket
size, so a heatmap computed later agrees with one computed live. Events of a coin with no such
bar yet are left out of the cells and counted in the `unpriced_events` metadata (and the run
log).

Everything is one DuckDB query over the lake's Parquet files: the reference prices are found
once per (coin, time bucket) of the range with an ASOF join, then every event is placed and the
cells summed in a single pass. No Python touches a row.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from cg_assets.coinglass.plans import MINUTE_MS
from cg_assets.heatmaps.buckets import EDGE_TOLERANCE, check_day_divisor, check_grid
from cg_assets.heatmaps.gallery import publish_pictures
from cg_assets.heatmaps.inputs import coin_bars, extra_days, lookback_days
from cg_assets.heatmaps.pictures import Panel, render_png, utc_label
from cg_assets.liquidations.assets import ASSET as ORDERS
from cg_assets.liquidations.orders import SCHEMA as ORDERS_SCHEMA
from cg_assets.market.series import MARKET_ASSETS_BY_NAME
from cg_assets.partitions import daily_partitions, days_between, lookback, to_ms
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings
from cg_assets.storage import Lake
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import CheckOutcome, Column, column_schema, schema_of

ASSET = "liquidation_heatmap"
GROUP = "heatmaps"
PRICES = "price_ohlc"

COLUMNS: tuple[Column, ...] = (
    Column("ts", pa.timestamp("ms", tz="UTC"), "Start of the time bucket, UTC"),
    Column("symbol", pa.string(), "Coin ticker, e.g. BTC"),
    Column("bucket", pa.int64(), "Price bucket: floor((price / ref_price - 1) / grid)"),
    Column("grid", pa.float64(), "Bucket width as a fraction of ref_price (0.0025 = 0.25%)"),
    Column(
        "bucket_minutes",
        pa.int64(),
        "Length of the time bucket, minutes: the cell covers [ts, ts + bucket_minutes)",
    ),
    Column("ref_price", pa.float64(), "Coin price the buckets are measured from, USD"),
    Column("price_low", pa.float64(), "Bucket's lower bound (inclusive), USD"),
    Column("price_high", pa.float64(), "Bucket's upper bound (exclusive), USD"),
    Column("total_usd", pa.float64(), "USD liquidated in the cell (long_usd + short_usd)"),
    Column("long_usd", pa.float64(), "USD of long positions liquidated in the cell"),
    Column("short_usd", pa.float64(), "USD of short positions liquidated in the cell"),
    Column("events", pa.int64(), "Number of liquidations in the cell"),
)
SCHEMA = schema_of(COLUMNS)
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
        ON s.symbol = b.symbol AND b.close_ms <= s.t0
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
    $bucket_minutes AS bucket_minutes,
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

CHECKS: dict[str, str] = {
    SCHEMA_CHECK: "Columns and types match the contract.",
    "usd_conserved": "Read back from the lake: per coin and time bucket, the stored cells plus"
    " the events left unpriced hold exactly the days' liquidations (count, long and short USD),"
    " and every cell's total is its long plus short USD.",
}

# Over the view `rows` (the cells as stored), the orders again (`liquidation_orders`) and the
# run's unpriced events per coin and time bucket (`unpriced_slots`): the time buckets that do
# not add up, plus the stored cells whose total is not their long + short USD. Grouping the
# orders by time bucket alone needs no reference price, so a cell lost, duplicated or
# corrupted on the way to the lake shows here whatever the heatmap query did.
USD_CONSERVED_SQL = """
WITH expected AS (
    SELECT symbol, epoch_ms(ts) // $bucket_ms * $bucket_ms AS t0,
           count(*) AS events,
           coalesce(sum(usd_value) FILTER (WHERE side = 'long'), 0) AS long_usd,
           coalesce(sum(usd_value) FILTER (WHERE side = 'short'), 0) AS short_usd
    FROM liquidation_orders
    WHERE ts >= $start AND ts < $end AND side IN ('long', 'short')
    GROUP BY ALL
),
accounted AS (
    SELECT symbol, epoch_ms(ts) AS t0, events, long_usd, short_usd FROM rows
    UNION ALL
    SELECT symbol, t0, events, long_usd, short_usd FROM unpriced_slots
),
found AS (
    SELECT symbol, t0, sum(events) AS events, sum(long_usd) AS long_usd,
           sum(short_usd) AS short_usd
    FROM accounted
    GROUP BY ALL
)
SELECT
    (SELECT count(*)
     FROM expected AS e FULL OUTER JOIN found AS f USING (symbol, t0)
     WHERE e.events IS DISTINCT FROM f.events
        OR abs(e.long_usd - f.long_usd) > $rel * greatest(1, e.long_usd)
        OR abs(e.short_usd - f.short_usd) > $rel * greatest(1, e.short_usd)),
    (SELECT count(*) FROM rows
     WHERE abs(total_usd - long_usd - short_usd) > $rel * greatest(1, total_usd))
"""
USD_TOLERANCE = 1e-9  # relative: float sums depend on their order


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
            "bucket_minutes": bucket_ms // MINUTE_MS,
            "grid": grid,
            "edge": EDGE_TOLERANCE,
        },
    ).to_arrow_table()


@dataclass(frozen=True)
class HeatmapRows:
    """`heatmap_cells`' rows split: the cells (in SCHEMA) and, per coin and time bucket, the
    events that had no reference price (`symbol`, `t0` in epoch ms, `events`, `long_usd`,
    `short_usd`)."""

    cells: pa.Table
    unpriced: pa.Table

    @property
    def unpriced_events(self) -> int:
        return int(pc.sum(self.unpriced["events"]).as_py() or 0)

    @property
    def unpriced_usd(self) -> float:
        total = pc.add(self.unpriced["long_usd"], self.unpriced["short_usd"])
        return float(pc.sum(total).as_py() or 0.0)


def split_unpriced(rows: pa.Table) -> HeatmapRows:
    priced = pc.is_valid(rows["bucket"])
    unpriced = rows.filter(pc.invert(priced))
    cells = rows.filter(priced)
    cells = cells.set_column(0, "ts", pc.cast(cells["ts"], pa.timestamp("ms", tz="UTC")))
    slots = pa.table(
        {
            "symbol": unpriced["symbol"],
            "t0": pc.cast(unpriced["ts"], pa.int64()),
            "events": pc.cast(unpriced["events"], pa.int64()),
            "long_usd": pc.cast(unpriced["long_usd"], pa.float64()),
            "short_usd": pc.cast(unpriced["short_usd"], pa.float64()),
        }
    )
    return HeatmapRows(cells.cast(SCHEMA), slots)


def usd_conserved(
    lake: Lake, days: Sequence[date], window: tuple[int, int], bucket_ms: int, unpriced: pa.Table
) -> Callable[[duckdb.DuckDBPyConnection], CheckOutcome]:
    """The `usd_conserved` read-back check (USD_CONSERVED_SQL) for the run's `days` and time
    `window` (epoch ms), given the events it left unpriced."""

    def check(con: duckdb.DuckDBPyConnection) -> CheckOutcome:
        lake.attach(con, ORDERS, days, ORDERS_SCHEMA)
        con.register("unpriced_slots", unpriced)
        start, end = (datetime.fromtimestamp(ms / 1000, UTC) for ms in window)
        [(slots, rows)] = con.execute(
            USD_CONSERVED_SQL,
            {"start": start, "end": end, "bucket_ms": bucket_ms, "rel": USD_TOLERANCE},
        ).fetchall()
        details = {"unbalanced_time_buckets": slots, "cells_not_long_plus_short": rows}
        if slots or rows:
            return CheckOutcome(
                "usd_conserved",
                False,
                f"{slots} coin time bucket(s) where the stored cells and unpriced events do not"
                f" add up to the liquidations; {rows} cell(s) whose total is not long + short",
                details,
            )
        return CheckOutcome(
            "usd_conserved", True, "stored cells + unpriced events = the liquidations", details
        )

    return check


def open_inputs(
    con: duckdb.DuckDBPyConnection, lake: Lake, days: list[date], interval_ms: int
) -> None:
    """Attach the events of `days` and the price bars they may need to `con`."""
    lake.attach(con, ORDERS, days, ORDERS_SCHEMA)
    lake.attach(con, PRICES, lookback_days(days, interval_ms), _PRICE_SCHEMA)
    coin_bars(con, interval_ms)


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
            dg.AssetCheckSpec(name, asset=ASSET, description=text) for name, text in CHECKS.items()
        ],
    )
    def liquidation_heatmap(
        context: dg.AssetExecutionContext, config: LiquidationHeatmapConfig, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        start_ms, end_ms = to_ms(window.start), to_ms(window.end)
        bucket_ms = config.bucket_minutes * MINUTE_MS
        with lake.connect() as con:
            open_inputs(con, lake.lake, days, settings.interval_ms)
            rows = split_unpriced(
                heatmap_cells(
                    con, start_ms=start_ms, end_ms=end_ms, bucket_ms=bucket_ms, grid=config.grid
                )
            )
        cells, unpriced = rows.cells, rows.unpriced_events
        placed_usd = float(pc.sum(cells["total_usd"]).as_py() or 0.0)
        if unpriced:
            context.log.warning(
                f"{unpriced} liquidation(s) (${rows.unpriced_usd:,.0f}) have no reference price"
                f" yet: no {PRICES} bar of their coin closed before their time bucket began;"
                f" materialize {PRICES} for those days and re-run"
            )
        published = lake.publish(ASSET, cells, days)
        metadata = {
            **published.metadata,
            "events": int(pc.sum(cells["events"]).as_py() or 0),
            "liquidated_usd": placed_usd,
            "unpriced_events": unpriced,
            "unpriced_usd": rows.unpriced_usd,
            "bucket_minutes": config.bucket_minutes,
            "grid": config.grid,
        }
        metadata.update(
            publish_pictures(
                lake,
                ASSET,
                cells,
                days,
                lambda part: render_png(heatmap_panels(part, bucket_ms), "USD liquidated"),
            )
        )
        yield dg.MaterializeResult(metadata=metadata)
        check = usd_conserved(lake.lake, days, (start_ms, end_ms), bucket_ms, rows.unpriced)
        yield from lake.check_results(ASSET, days, SCHEMA, {"usd_conserved": check})

    return liquidation_heatmap
