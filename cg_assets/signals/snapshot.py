"""`market_snapshot`: one row per coin and bar with everything the signal rules read.

DuckDB SQL over the market assets' Parquet days. For each bar of the partition (closed bars
only) and each configured coin, every value comes from that bar and nothing else: the hour's
liquidation and taker sums from the bars of the hour ending with it, the changes against the
exact earlier bars, and the levels (funding, OI, positioning, price) from the bar itself. Nothing
is carried forward from an earlier bar, levels included: a level from an earlier bar beside
this bar's flows would describe two moments in one row, and the digest waits for a late input
instead (see `cg_assets.alerts.assets`). An input with no row of the coin at the bar is named in
`absent_inputs`, and each field it would give is a null with its reason in `missing`; a field is
never filled with a neutral default such as 50%. A coin and bar with no input at all has no row.

Definitions at intervals other than the default 1h:
- "the last hour" (the OI rule's change, the liquidation and taker sums) spans
  `hour_bars = max(1, 1h / interval)` bars: four 15-minute bars, or one 4h bar (the shortest
  span the lake holds, which the evidence then names);
- `oi_change_24_pct` is over 24 bars (a day at 1h), `price_change_pct` over one bar.

Funding: `funding_rate_ohlc` holds percent per funding interval, and exchanges settle every 8 h,
4 h or 1 h, so each exchange's rate is scaled to 8 h before averaging. The intervals come from
CoinGlass's funding-rate exchange-list (one request per run, served on every plan, and per coin,
since an exchange can settle coins on different schedules); a per-exchange override in the run
config wins over it. The list is today's: a backfill uses today's intervals for old bars.
"""

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import Field, field_validator

from cg_assets.automation import follows_inputs
from cg_assets.coinglass import CoinGlassError
from cg_assets.coinglass.plans import DAY_MS
from cg_assets.market.series import MARKET_ASSETS_BY_NAME, SYMBOL, TS
from cg_assets.partitions import closed_bars_end, daily_partitions, days_between, lookback, to_ms
from cg_assets.resources import COINGLASS_POOL, CoinGlassResource, LakeResource
from cg_assets.settings import Settings
from cg_assets.signals.preview import markdown_table
from cg_assets.storage import Lake
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import Column, column_schema, schema_of

ASSET = "market_snapshot"
GROUP = "signals"
HOUR_MS = 3_600_000
FUNDING_LIST_PATH = "/api/futures/funding-rate/exchange-list"
# Each input asset and the snapshot fields it gives.
FIELDS_BY_INPUT: dict[str, tuple[str, ...]] = {
    "funding_rate_ohlc": ("funding_avg_8h_pct",),
    "open_interest_ohlc": ("oi_usd", "oi_change_1_pct", "oi_change_24_pct"),
    "taker_volume": ("taker_buy_share_pct",),
    "long_short_ratio": ("retail_long_pct", "top_account_long_pct", "top_position_long_pct"),
    "liquidation_history": ("long_liq_usd", "short_liq_usd"),
    "price_ohlc": ("price", "price_change_pct"),
}
INPUTS = tuple(FIELDS_BY_INPUT)


def _f64(name: str, description: str) -> Column:
    return Column(name, pa.float64(), description)


COLUMNS: tuple[Column, ...] = (
    Column(TS.name, TS.type, "Start of the bar evaluated, UTC"),
    SYMBOL,
    _f64(
        "funding_avg_8h_pct",
        "Funding averaged over the configured exchanges, percent per 8 h (each exchange's"
        " latest rate x 8 / its funding interval in hours)",
    ),
    _f64("oi_usd", "Aggregated open interest at the bar's close, USD"),
    _f64("oi_change_1_pct", "Open-interest change over the last hour (max(1h, 1 bar)), percent"),
    _f64("oi_change_24_pct", "Open-interest change over 24 bars, percent"),
    _f64("long_liq_usd", "Longs liquidated in the last hour (max(1h, 1 bar)), USD"),
    _f64("short_liq_usd", "Shorts liquidated in the last hour (max(1h, 1 bar)), USD"),
    _f64("retail_long_pct", "All-accounts (global) long share, mean over exchanges, percent"),
    _f64("top_account_long_pct", "Top-trader accounts long share, mean over exchanges, percent"),
    _f64("top_position_long_pct", "Top-trader positions long share, mean over exchanges, percent"),
    _f64("taker_buy_share_pct", "Taker buy volume / (buy + sell) in the last hour, percent"),
    _f64("price", "Close price, mean over the configured exchanges, USD"),
    _f64("price_change_pct", "Price change against the previous bar, mean over exchanges, percent"),
    Column(
        "absent_inputs",
        pa.list_(pa.string()),
        "Input assets with no row of the coin at this bar (late or not served); their fields"
        " are null",
    ),
    Column("missing", pa.string(), "JSON object: a reason for every null field"),
)
SCHEMA = schema_of(COLUMNS)
NULLABLE = tuple(c.name for c in COLUMNS if c.type == pa.float64())
PERCENT_SHARES = (
    "retail_long_pct",
    "top_account_long_pct",
    "top_position_long_pct",
    "taker_buy_share_pct",
)

CHECKS: dict[str, str] = {
    SCHEMA_CHECK: "Columns and types match the contract.",
    "unique_key": "One row per (ts, symbol).",
    "value_ranges": "Shares within 0-100, OI and price > 0, liquidations >= 0, no NaN.",
    "nulls_explained": "Every null field has a reason in `missing`, and only null fields do;"
    " every field of an input named in `absent_inputs` is null.",
}
CHECK_SQL: dict[str, str] = {
    "unique_key": "SELECT count(*) - count(DISTINCT (ts, symbol)) FROM rows",
    "value_ranges": "SELECT count(*) FROM rows WHERE "
    + " OR ".join(
        [f"{c} NOT BETWEEN 0 AND 100" for c in PERCENT_SHARES]
        + ["oi_usd <= 0", "price <= 0", "long_liq_usd < 0", "short_liq_usd < 0"]
        + [f"isnan({c})" for c in NULLABLE]
    ),
    "nulls_explained": "SELECT count(*) FROM rows WHERE NOT coalesce(json_valid(missing), false)"
    + "".join(f" OR ({c} IS NULL) <> try(json_exists(missing, '$.{c}'))" for c in NULLABLE)
    + " OR absent_inputs IS NULL"
    + "".join(
        f" OR (list_contains(absent_inputs, '{name}') AND {field} IS NOT NULL)"
        for name, fields in FIELDS_BY_INPUT.items()
        for field in fields
    ),
}

SNAPSHOT_SQL = """
WITH grid AS (
    SELECT g.ts, s.symbol
    FROM range($start, $end, $interval) AS g(ts)
    CROSS JOIN unnest($symbols::VARCHAR[]) AS s(symbol)
),

-- Per-bar inputs of the configured coins and exchanges.
funding AS (
    SELECT f.symbol, f.ts, f.close * 8 / i.interval_hours AS rate_8h
    FROM funding_rate_ohlc AS f
    JOIN funding_intervals AS i USING (symbol, exchange)
    WHERE list_contains($exchanges, f.exchange)
),
oi AS (
    SELECT cur.symbol, cur.ts, cur.close AS oi_usd,
           100 * (cur.close / nullif(hour_ago.close, 0) - 1) AS change_1,
           100 * (cur.close / nullif(day_ago.close, 0) - 1) AS change_24
    FROM open_interest_ohlc AS cur
    LEFT JOIN open_interest_ohlc AS hour_ago
        ON hour_ago.symbol = cur.symbol AND hour_ago.ts = cur.ts - $hour
    LEFT JOIN open_interest_ohlc AS day_ago
        ON day_ago.symbol = cur.symbol AND day_ago.ts = cur.ts - $bars_24
),
liq AS (
    SELECT symbol, ts,
           sum(long_liquidation_usd) OVER last_hour AS long_usd,
           sum(short_liquidation_usd) OVER last_hour AS short_usd,
           count(*) OVER last_hour AS bars
    FROM liquidation_history
    WINDOW last_hour AS (
        PARTITION BY symbol ORDER BY ts RANGE BETWEEN $hour_before PRECEDING AND CURRENT ROW
    )
),
taker AS (
    SELECT symbol, ts,
           sum(buy_volume_usd) OVER last_hour AS buy_usd,
           sum(sell_volume_usd) OVER last_hour AS sell_usd,
           count(*) OVER last_hour AS bars
    FROM taker_volume
    WINDOW last_hour AS (
        PARTITION BY symbol ORDER BY ts RANGE BETWEEN $hour_before PRECEDING AND CURRENT ROW
    )
),
ratios AS (
    SELECT symbol, ts,
           avg(long_percent) FILTER (WHERE scope = 'global_account') AS retail_long_pct,
           avg(long_percent) FILTER (WHERE scope = 'top_account') AS top_account_long_pct,
           avg(long_percent) FILTER (WHERE scope = 'top_position') AS top_position_long_pct
    FROM long_short_ratio
    WHERE list_contains($exchanges, exchange)
    GROUP BY symbol, ts
),
prices AS (
    SELECT cur.symbol, cur.ts, avg(cur.close) AS price,
           avg(100 * (cur.close / nullif(prev.close, 0) - 1)) AS change_pct
    FROM price_ohlc AS cur
    LEFT JOIN price_ohlc AS prev
        ON prev.symbol = cur.symbol AND prev.exchange = cur.exchange
       AND prev.ts = cur.ts - $interval
    WHERE list_contains($exchanges, cur.exchange)
    GROUP BY cur.symbol, cur.ts
),

-- Which inputs hold a row of the coin at the bar; the others are absent.
present AS (
    SELECT DISTINCT symbol, ts, 'funding_rate_ohlc' AS input FROM funding_rate_ohlc
    WHERE list_contains($exchanges, exchange)
    UNION ALL SELECT DISTINCT symbol, ts, 'open_interest_ohlc' FROM open_interest_ohlc
    UNION ALL SELECT DISTINCT symbol, ts, 'taker_volume' FROM taker_volume
    UNION ALL SELECT DISTINCT symbol, ts, 'long_short_ratio' FROM long_short_ratio
    WHERE list_contains($exchanges, exchange)
    UNION ALL SELECT DISTINCT symbol, ts, 'liquidation_history' FROM liquidation_history
    UNION ALL SELECT DISTINCT symbol, ts, 'price_ohlc' FROM price_ohlc
    WHERE list_contains($exchanges, exchange)
),
inputs_at AS (
    SELECT g.ts, g.symbol, count(p.input) AS present,
           coalesce(list(i.input ORDER BY i.input) FILTER (WHERE p.input IS NULL),
                    []::VARCHAR[]) AS absent
    FROM grid AS g
    CROSS JOIN unnest($inputs::VARCHAR[]) AS i(input)
    LEFT JOIN present AS p ON p.symbol = g.symbol AND p.ts = g.ts AND p.input = i.input
    GROUP BY g.ts, g.symbol
),

-- Every input at the bar itself: an exact match on ts, never an earlier bar.
snapshot AS (
    SELECT a.ts, a.symbol, strftime(a.ts, '%Y-%m-%dT%H:%MZ') AS bar,
           f.funding AS funding_avg_8h_pct,
           o.oi_usd,
           o.change_1 AS oi_change_1_pct,
           o.change_24 AS oi_change_24_pct,
           CASE WHEN l.bars = $hour_bars THEN l.long_usd END AS long_liq_usd,
           CASE WHEN l.bars = $hour_bars THEN l.short_usd END AS short_liq_usd,
           r.retail_long_pct,
           r.top_account_long_pct,
           r.top_position_long_pct,
           CASE WHEN k.bars = $hour_bars AND k.buy_usd + k.sell_usd > 0
                THEN 100 * k.buy_usd / (k.buy_usd + k.sell_usd) END AS taker_buy_share_pct,
           p.price,
           p.change_pct AS price_change_pct,
           a.absent AS absent_inputs,
           l.bars AS liq_bars, k.bars AS taker_bars
    FROM inputs_at AS a
    LEFT JOIN (SELECT symbol, ts, avg(rate_8h) AS funding FROM funding GROUP BY ALL) AS f
        USING (ts, symbol)
    LEFT JOIN oi AS o USING (ts, symbol)
    LEFT JOIN liq AS l USING (ts, symbol)
    LEFT JOIN taker AS k USING (ts, symbol)
    LEFT JOIN ratios AS r USING (ts, symbol)
    LEFT JOIN prices AS p USING (ts, symbol)
    WHERE a.present > 0
)

SELECT ts, symbol,
       funding_avg_8h_pct, oi_usd, oi_change_1_pct, oi_change_24_pct,
       long_liq_usd, short_liq_usd,
       retail_long_pct, top_account_long_pct, top_position_long_pct,
       taker_buy_share_pct, price, price_change_pct, absent_inputs,
       to_json(map_from_entries(list_filter([
           {'k': 'funding_avg_8h_pct', 'v': CASE WHEN funding_avg_8h_pct IS NULL THEN
               'no funding_rate_ohlc bar at ' || bar
               || ' from an exchange with a known funding interval' END},
           {'k': 'oi_usd', 'v': CASE WHEN oi_usd IS NULL THEN
               'no open_interest_ohlc bar at ' || bar END},
           {'k': 'oi_change_1_pct', 'v': CASE
               WHEN oi_usd IS NULL THEN 'no open_interest_ohlc bar at ' || bar
               WHEN oi_change_1_pct IS NULL THEN 'no open_interest_ohlc bar at '
                   || strftime(ts - $hour, '%Y-%m-%dT%H:%MZ') || ' to compare with' END},
           {'k': 'oi_change_24_pct', 'v': CASE
               WHEN oi_usd IS NULL THEN 'no open_interest_ohlc bar at ' || bar
               WHEN oi_change_24_pct IS NULL THEN 'no open_interest_ohlc bar at '
                   || strftime(ts - $bars_24, '%Y-%m-%dT%H:%MZ') || ' to compare with' END},
           {'k': 'long_liq_usd', 'v': CASE
               WHEN liq_bars IS NULL THEN 'no liquidation_history bar at ' || bar
               WHEN long_liq_usd IS NULL THEN printf(
                   'liquidation_history has %d of the %d bars of the hour', liq_bars, $hour_bars)
               END},
           {'k': 'short_liq_usd', 'v': CASE
               WHEN liq_bars IS NULL THEN 'no liquidation_history bar at ' || bar
               WHEN short_liq_usd IS NULL THEN printf(
                   'liquidation_history has %d of the %d bars of the hour', liq_bars, $hour_bars)
               END},
           {'k': 'retail_long_pct', 'v': CASE WHEN retail_long_pct IS NULL THEN
               'no long_short_ratio global_account bar at ' || bar END},
           {'k': 'top_account_long_pct', 'v': CASE WHEN top_account_long_pct IS NULL THEN
               'no long_short_ratio top_account bar at ' || bar END},
           {'k': 'top_position_long_pct', 'v': CASE WHEN top_position_long_pct IS NULL THEN
               'no long_short_ratio top_position bar at ' || bar END},
           {'k': 'taker_buy_share_pct', 'v': CASE
               WHEN taker_bars IS NULL THEN 'no taker_volume bar at ' || bar
               WHEN taker_bars < $hour_bars THEN printf(
                   'taker_volume has %d of the %d bars of the hour', taker_bars, $hour_bars)
               WHEN taker_buy_share_pct IS NULL THEN 'no taker volume in the hour (buy + sell = 0)'
               END},
           {'k': 'price', 'v': CASE WHEN price IS NULL THEN 'no price_ohlc bar at ' || bar END},
           {'k': 'price_change_pct', 'v': CASE
               WHEN price IS NULL THEN 'no price_ohlc bar at ' || bar
               WHEN price_change_pct IS NULL THEN 'no price_ohlc bar one bar earlier' END}
       ], lambda e: e.v IS NOT NULL))) AS missing
FROM snapshot
ORDER BY symbol, ts
"""


PREVIEW_ROWS = 8
PREVIEW = (
    "ts",
    "symbol",
    "funding_avg_8h_pct",
    "oi_change_1_pct",
    "long_liq_usd",
    "short_liq_usd",
    "retail_long_pct",
    "taker_buy_share_pct",
    "price",
)


def hour_bars(interval_ms: int) -> int:
    """Bars making up "the last hour": one at 1h and coarser intervals."""
    return max(1, HOUR_MS // interval_ms)


def lookback_days(interval_ms: int) -> int:
    """Days before a partition its rows read: 24 bars back, plus the hour."""
    bars = 24 + hour_bars(interval_ms)
    return math.ceil(bars * interval_ms / DAY_MS)


@dataclass(frozen=True)
class SnapshotQuery:
    symbols: Sequence[str]
    exchanges: Sequence[str]
    interval_ms: int
    start: datetime  # first bar evaluated
    end: datetime  # bars starting before this are evaluated


def compute_snapshot(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    query: SnapshotQuery,
    funding_hours: Mapping[tuple[str, str], float],
) -> pa.Table:
    """The snapshot rows for the bars in [start, end), read from the lake; typed as SCHEMA."""
    interval = timedelta(milliseconds=query.interval_ms)
    first_day = (query.start - timedelta(days=lookback_days(query.interval_ms))).date()
    days = days_between(datetime.combine(first_day, datetime.min.time(), UTC), query.end)
    con.execute("SET TimeZone = 'UTC'")
    for name in INPUTS:
        lake.attach(con, name, days, MARKET_ASSETS_BY_NAME[name].schema)
    con.register("funding_intervals", _funding_table(funding_hours))
    n_hour = hour_bars(query.interval_ms)
    table = con.sql(
        SNAPSHOT_SQL,
        params={
            "start": query.start,
            "end": query.end,
            "interval": interval,
            "symbols": list(query.symbols),
            "exchanges": list(query.exchanges),
            "hour": interval * n_hour,
            "hour_before": interval * (n_hour - 1),
            "hour_bars": n_hour,
            "bars_24": interval * 24,
            "inputs": list(INPUTS),
        },
    ).to_arrow_table()
    return table.cast(SCHEMA)


def _funding_table(hours: Mapping[tuple[str, str], float]) -> pa.Table:
    return pa.table(
        {
            "symbol": pa.array([s for s, _ in hours], pa.string()),
            "exchange": pa.array([e for _, e in hours], pa.string()),
            "interval_hours": pa.array(list(hours.values()), pa.float64()),
        }
    )


def funding_intervals(
    listing: Sequence[Mapping[str, Any]],
    symbols: Sequence[str],
    exchanges: Sequence[str],
    overrides: Mapping[str, float],
) -> dict[tuple[str, str], float]:
    """(coin, exchange) -> funding interval in hours for the configured coins and exchanges.

    From the exchange-list's USDT-margined entries (the contracts `funding_rate_ohlc` holds);
    `overrides` (exchange -> hours) win. Pairs with no known, positive interval are left out,
    so their funding is excluded rather than scaled by a guess.
    """
    wanted = {(s, e) for s in symbols for e in exchanges}
    hours: dict[tuple[str, str], float] = {}
    for coin in listing:
        for entry in coin.get("stablecoin_margin_list") or ():
            key = (str(coin.get("symbol")), str(entry.get("exchange")))
            try:
                value = float(entry["funding_rate_interval"])
            except (KeyError, TypeError, ValueError):
                continue
            if key in wanted and math.isfinite(value) and value > 0:
                hours[key] = value
    for exchange, value in overrides.items():
        for symbol in symbols:
            if (symbol, exchange) in wanted:
                hours[(symbol, exchange)] = value
    return dict(sorted(hours.items()))


class SnapshotConfig(dg.Config):
    """Run config of `market_snapshot`: what to use where the exchange-list is wrong or down."""

    funding_interval_hours: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Funding interval in hours per exchange (e.g. {'Hyperliquid': 1}), overriding"
            " CoinGlass's funding-rate exchange-list for every coin."
        ),
    )

    @field_validator("funding_interval_hours")
    @classmethod
    def _positive_hours(cls, hours: dict[str, float]) -> dict[str, float]:
        bad = {e: h for e, h in hours.items() if not (math.isfinite(h) and h > 0)}
        if bad:
            raise ValueError(
                f"funding_interval_hours={bad}: each interval must be a positive number of hours"
            )
        return hours


def build_snapshot_asset(
    settings: Settings, clock: Callable[[], float] = time.time
) -> dg.AssetsDefinition:
    """The asset for these settings; `clock` (epoch seconds) decides which bars have closed,
    injectable so tests move time instead of depending on today's date."""
    upstream = lookback(lookback_days(settings.interval_ms))

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description="Per coin and bar: funding per 8 h, OI and its changes, last-hour"
        " liquidations, retail and top-trader positioning, taker flow and price.",
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "duckdb"},
        deps=[dg.AssetDep(name, partition_mapping=upstream) for name in INPUTS],
        automation_condition=follows_inputs(),
        metadata={"dagster/column_schema": column_schema(COLUMNS), "interval": settings.interval},
        check_specs=[
            dg.AssetCheckSpec(name, asset=ASSET, description=text) for name, text in CHECKS.items()
        ],
        pool=COINGLASS_POOL,
    )
    def market_snapshot(
        context: dg.AssetExecutionContext,
        config: SnapshotConfig,
        coinglass: CoinGlassResource,
        lake: LakeResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        now = datetime.fromtimestamp(clock(), UTC)
        end_ms = closed_bars_end(to_ms(window.end), to_ms(now), settings.interval_ms)
        hours, source = _intervals(context, coinglass, settings, config)
        query = SnapshotQuery(
            settings.symbols,
            settings.exchanges,
            settings.interval_ms,
            window.start,
            max(window.start, datetime.fromtimestamp(end_ms / 1000, UTC)),
        )
        with lake.connect() as con:
            table = compute_snapshot(con, lake.lake, query, hours)
        published = lake.publish(ASSET, table, days)
        yield dg.MaterializeResult(
            metadata={**published.metadata, **_metadata(table, hours, source)}
        )
        yield from lake.check_results(ASSET, days, SCHEMA, CHECK_SQL)

    return market_snapshot


def _intervals(
    context: dg.AssetExecutionContext,
    coinglass: CoinGlassResource,
    settings: Settings,
    config: SnapshotConfig,
) -> tuple[dict[tuple[str, str], float], str]:
    """Funding intervals and where they came from; a failed list request leaves the overrides
    (the lake's other inputs are still worth a snapshot, and the funding gap is explained)."""
    try:
        listing = coinglass.client.get(FUNDING_LIST_PATH, {})
        source = f"{FUNDING_LIST_PATH} with run-config overrides"
    except CoinGlassError as exc:
        context.log.warning(
            f"funding intervals unavailable ({exc}); only funding_interval_hours"
            f" {sorted(config.funding_interval_hours)} is used"
        )
        listing, source = [], f"run-config overrides only ({type(exc).__name__})"
    hours = funding_intervals(
        listing or [], settings.symbols, settings.exchanges, config.funding_interval_hours
    )
    unknown = sorted(
        f"{e}:{s}" for s in settings.symbols for e in settings.exchanges if (s, e) not in hours
    )
    if unknown:
        context.log.warning(
            f"no funding interval for {', '.join(unknown)}: their funding is left out of the"
            " average; set funding_interval_hours in the run config to include them"
        )
    return hours, source


def _metadata(
    table: pa.Table, hours: Mapping[tuple[str, str], float], source: str
) -> dict[str, Any]:
    """What the snapshot adds to the lake's standard metadata (its preview replaces the lake's:
    the columns a trader reads first)."""
    nulls = {name: table[name].null_count for name in NULLABLE if table[name].null_count}
    metadata: dict[str, Any] = {
        "null_fields": dg.MetadataValue.json(nulls),
        "funding_intervals_h": dg.MetadataValue.json(
            {f"{e}:{s}": h for (s, e), h in hours.items()}
        ),
        "funding_intervals_source": source,
    }
    if table.num_rows:
        rows = sorted(table.select(PREVIEW).to_pylist(), key=lambda r: (r["ts"], r["symbol"]))
        metadata["preview"] = dg.MetadataValue.md(markdown_table(rows[-PREVIEW_ROWS:], PREVIEW))
    return metadata
