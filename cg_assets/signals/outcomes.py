"""`signal_outcomes`: what the price did after every signal, at 1 h, 4 h and 24 h.

One row per signal and horizon. The outcome starts at the first price tradable after the
alert (the open of the bar after the signal's bar) and ends `horizon` later; its return is
signed by the rule's hypothesis (`rules.HYPOTHESES`), and the worst move against it within the
window is kept (maximum adverse excursion). A horizon that has not passed yet is `pending`
with null values, never zero, and becomes `done` when the day is evaluated again after its
prices landed: the partition of day D reads prices of D and D+1 (declared as the partition
mapping, so the lineage shows the forward window), and its automation condition covers the
last three days, so the 24 h outcome of a signal at 23:00 two days ago is completed by the
daily finalize of yesterday's bars.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa

from cg_assets.automation import follows_inputs
from cg_assets.market.series import MARKET_ASSETS_BY_NAME, SYMBOL, TS
from cg_assets.partitions import daily_partitions, days_between
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings
from cg_assets.signals.backtest import (
    DONE,
    HORIZONS,
    MISSING,
    PENDING,
    PriceBars,
    adverse_excursion,
    forward_returns,
    signed_returns,
)
from cg_assets.signals.engine import ASSET as SIGNALS
from cg_assets.signals.engine import SCHEMA as SIGNALS_SCHEMA
from cg_assets.signals.rules import predicted_side
from cg_assets.signals.snapshot import GROUP
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import Column, column_schema, schema_of

ASSET = "signal_outcomes"
PRICE = MARKET_ASSETS_BY_NAME["price_ohlc"]
# The 24 h window of a signal late on day D ends on day D+1.
FORWARD_DAYS = 1
# Yesterday's finalize completes the 24 h outcomes of the day before: three days follow inputs.
RECOMPUTED = timedelta(days=FORWARD_DAYS + 2)

_TS = pa.timestamp("ms", tz="UTC")
COLUMNS: tuple[Column, ...] = (
    Column(TS.name, _TS, "Start of the bar the signal was found on, UTC"),
    SYMBOL,
    Column("rule", pa.string(), "Rule id"),
    Column("level", pa.string(), "HIGH, MEDIUM or LOW"),
    Column("side", pa.int8(), "Predicted side: 1 up, -1 down, 0 none (scored by the move's size)"),
    Column("signal_id", pa.string(), "The signal's id in `signals`"),
    Column("horizon", pa.string(), f"Outcome horizon: {', '.join(HORIZONS)}"),
    Column("status", pa.string(), f"{DONE}; {PENDING} (horizon not passed); {MISSING} (gap)"),
    Column("entry_ts", _TS, "Open of the next bar after the signal's bar: the first tradable"),
    Column("exit_ts", _TS, "entry_ts + horizon"),
    Column("entry_price", pa.float64(), "Bar open at entry_ts, mean over exchanges, USD"),
    Column("exit_price", pa.float64(), "Close of the bar ending at exit_ts, USD"),
    Column("ret_pct", pa.float64(), "exit_price / entry_price - 1, percent"),
    Column("signed_pct", pa.float64(), "ret_pct times side; |ret_pct| when side is 0"),
    Column("mae_pct", pa.float64(), "Worst move against the prediction within the window (<= 0)"),
)
SCHEMA = schema_of(COLUMNS)

# Coin prices: the mean over the configured exchanges, as `market_snapshot` takes them.
COIN_BARS_SQL = """
SELECT symbol, epoch_ms(ts) AS ts_ms, avg(open) AS open, avg(high) AS high,
       avg(low) AS low, avg(close) AS close
FROM price_ohlc
WHERE list_contains($symbols, symbol)
GROUP BY symbol, ts
ORDER BY symbol, ts
"""

SIGNALS_SQL = """
SELECT ts, symbol, rule, level, evidence, signal_id
FROM signals
ORDER BY ts, symbol, rule
"""

CHECKS: dict[str, str] = {
    SCHEMA_CHECK: "Columns and types match the contract.",
    "unique_outcome": "One row per signal and horizon.",
    "no_look_ahead": "Every outcome starts at the open of the bar after the signal's bar.",
    "pending_is_null": "Only done outcomes carry prices and returns; pending ones are null,"
    " never zero.",
}


def check_sql(interval_ms: int) -> dict[str, str]:
    return {
        "unique_outcome": "SELECT count(*) - count(DISTINCT (signal_id, horizon)) FROM rows",
        "no_look_ahead": "SELECT count(*) FROM rows"
        f" WHERE epoch_ms(entry_ts) - epoch_ms(ts) <> {int(interval_ms)}",
        "pending_is_null": "SELECT count(*) FROM rows WHERE CASE WHEN status = 'done'"
        " THEN ret_pct IS NULL OR signed_pct IS NULL OR entry_price IS NULL"
        " ELSE coalesce(ret_pct, signed_pct, entry_price, exit_price, mae_pct) IS NOT NULL END"
        f" OR status NOT IN ('{DONE}', '{PENDING}', '{MISSING}')",
    }


def usable_horizons(interval_ms: int) -> dict[str, int]:
    """The horizons a bar interval can measure (a 1 h outcome needs bars of at most 1 h)."""
    return {name: ms for name, ms in HORIZONS.items() if ms % interval_ms == 0}


def coin_bars(
    con: duckdb.DuckDBPyConnection, symbols: Sequence[str], interval_ms: int
) -> dict[str, PriceBars]:
    """Each coin's price bars from the `price_ohlc` relation of `con`."""
    table = con.execute(COIN_BARS_SQL, {"symbols": list(symbols)}).fetchnumpy()
    bars = {}
    for symbol in symbols:
        rows = table["symbol"] == symbol
        bars[symbol] = PriceBars(
            *(np.asarray(table[c][rows]) for c in ("ts_ms", "open", "high", "low", "close")),
            interval_ms=interval_ms,
        )
    return bars


def outcomes_table(
    signals: Sequence[Mapping], bars: Mapping[str, PriceBars], horizons: Mapping[str, int]
) -> pa.Table:
    """One row per signal and horizon (signals: rows of `signals`; coins without bars are
    left out)."""
    parts = []
    for symbol, coin in sorted(bars.items()):
        rows = [r for r in signals if r["symbol"] == symbol]
        if not rows:
            continue
        ts_ms = np.array([int(r["ts"].timestamp() * 1000) for r in rows], dtype=np.int64)
        side = np.array([int(predicted_side(r["rule"], json.loads(r["evidence"]))) for r in rows])
        keys = {
            name: pa.array([r[name] for r in rows], SCHEMA.field(name).type)
            for name in ("ts", "symbol", "rule", "level", "signal_id")
        }
        for horizon, horizon_ms in horizons.items():
            out = forward_returns(coin, ts_ms, horizon_ms)
            values = {
                **keys,
                "side": side,
                "horizon": [horizon] * len(rows),
                "status": out.status.astype(str),
                "entry_ts": out.entry_ts_ms,
                "exit_ts": out.exit_ts_ms,
                "entry_price": out.entry_price,
                "exit_price": out.exit_price,
                "ret_pct": out.ret_pct,
                "signed_pct": signed_returns(out.ret_pct, side),
                "mae_pct": adverse_excursion(out.low_pct, out.high_pct, side),
            }
            parts.append(
                pa.table(
                    {
                        c.name: pa.array(values[c.name], c.type, from_pandas=True)
                        if not isinstance(values[c.name], pa.Array)
                        else values[c.name]
                        for c in COLUMNS
                    },
                    schema=SCHEMA,
                )
            )
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()


def build_outcomes_asset(settings: Settings) -> dg.AssetsDefinition:
    horizons = usable_horizons(settings.interval_ms)
    checks = check_sql(settings.interval_ms)

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description="Per signal, the price 1 h, 4 h and 24 h after the first tradable price"
        " (next bar's open), signed by the rule's hypothesis, with the maximum adverse"
        " excursion; pending until the horizon has passed.",
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "duckdb"},
        deps=[
            SIGNALS,
            # The forward window: a signal of day D is followed into day D+1.
            dg.AssetDep(
                PRICE.name,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=0,
                    end_offset=FORWARD_DAYS,
                    allow_nonexistent_upstream_partitions=True,
                ),
            ),
        ],
        automation_condition=follows_inputs(window=RECOMPUTED, latest_day_of=[SIGNALS]),
        metadata={"dagster/column_schema": column_schema(COLUMNS)},
        check_specs=[
            dg.AssetCheckSpec(name, asset=ASSET, description=text) for name, text in CHECKS.items()
        ],
    )
    def signal_outcomes(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        with lake.connect() as con:
            table = read_and_score(con, lake, days, settings.symbols, settings.interval_ms)
        published = lake.publish(ASSET, table, days)
        statuses = table.group_by("status").aggregate([("status", "count")]).to_pylist()
        counts = {r["status"]: r["status_count"] for r in statuses}
        yield dg.MaterializeResult(
            metadata={
                **published.metadata,
                **{f"outcomes_{s}": counts.get(s, 0) for s in (DONE, PENDING, MISSING)},
                "horizons": ", ".join(horizons),
            }
        )
        yield from lake.check_results(ASSET, days, SCHEMA, checks)

    return signal_outcomes


def read_and_score(
    con: duckdb.DuckDBPyConnection,
    lake: LakeResource,
    days: Sequence[date],
    symbols: Sequence[str],
    interval_ms: int,
) -> pa.Table:
    """The outcomes of the signals of `days`, from the lake's signals and prices."""
    lake.lake.attach(con, SIGNALS, days, SIGNALS_SCHEMA)
    forward = [*days, *(days[-1] + timedelta(days=i + 1) for i in range(FORWARD_DAYS))]
    lake.lake.attach(con, PRICE.name, forward, PRICE.schema)
    signals = con.sql(SIGNALS_SQL).to_arrow_table().to_pylist()
    bars = coin_bars(con, symbols, interval_ms)
    return outcomes_table(signals, bars, usable_horizons(interval_ms))
