"""`signal_scorecard`: every rule's record over all history, refreshed daily.

One row per rule x level x coin x horizon x predicted side (a funding signal predicts down when
funding is positive and up when it is negative: two claims, two rows). Events are the signals a
user received (the alert ledger's dedup and cooldowns); each row compares their mean and median
signed return and hit rate with the unconditional baseline (every bar of the coin at that
horizon, scored the same way) and with the same calls placed at random bars, gives a 95 % block-
bootstrap interval of the effect (mean minus baseline; the blocks are episodes of overlapping
forward windows) and its p-value, and a Benjamini-Hochberg q-value across the whole table. A
chronological split (the first 70 % of the history in-sample, the rest out-of-sample) shows
whether an effect held up after the period it was found in. The counting is DuckDB SQL over the
outcomes; the statistics are `backtest`'s numpy functions.

The table is stored as the day it was computed (one snapshot per refresh); alerts quote the
newest. It also sweeps the numeric rules' thresholds (n and hit rate for a grid of them) over
the `market_snapshot` history, shown as a picture so tuning rests on evidence.
"""

import itertools
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa

from cg_assets.automation import refreshed_daily
from cg_assets.heatmaps.pictures import markdown_image
from cg_assets.resources import LakeResource, TelegramResource
from cg_assets.settings import Settings
from cg_assets.signals.backtest import (
    DONE,
    MIN_EPISODES,
    MIN_EVENTS,
    PriceBars,
    SweepPoint,
    bh_qvalues,
    bootstrap_mean,
    delivered,
    episodes,
    forward_returns,
    random_times,
    threshold_sweep,
)
from cg_assets.signals.outcomes import ASSET as OUTCOMES
from cg_assets.signals.outcomes import PRICE, coin_bars, usable_horizons
from cg_assets.signals.outcomes import SCHEMA as OUTCOMES_SCHEMA
from cg_assets.signals.rules import METRICS, Rule, Side, Snapshot, Thresholds, predicted_side
from cg_assets.signals.scorecard_pictures import forest_png, sweep_png
from cg_assets.signals.snapshot import ASSET as SNAPSHOT
from cg_assets.signals.snapshot import GROUP
from cg_assets.storage import Lake
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import Column, column_schema, schema_of
from cg_assets.telegram.ledger import Policy

ASSET = "signal_scorecard"
FOREST_PICTURE = "forest.png"
SWEEP_PICTURE = "sweep.png"
# After the daily finalize (00:20) and the outcomes and signals following it.
REFRESH_CRON = "45 0 * * *"
IN_SAMPLE_SHARE = 0.7
SWEEP_HORIZON = "4h"
SWEEP_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
SEED = 20_240_101
PREVIEW_ROWS = 30
KEY = ("rule", "level", "symbol", "horizon", "side")

_F = pa.float64()
_I = pa.int64()
_TS = pa.timestamp("ms", tz="UTC")
COLUMNS: tuple[Column, ...] = (
    Column("rule", pa.string(), "Rule id"),
    Column("level", pa.string(), "HIGH, MEDIUM or LOW"),
    Column("symbol", pa.string(), "Coin"),
    Column("horizon", pa.string(), "Outcome horizon after the first tradable price"),
    Column("side", pa.string(), "Predicted: up, down, or none (scored by the size of the move)"),
    Column("fired", _I, "Signals found, before dedup and cooldowns"),
    Column("received", _I, "Signals a user received (after the ledger's dedup and cooldowns)"),
    Column("pending", _I, "Received signals whose horizon has not passed"),
    Column("n", _I, "Received signals with a finished outcome: the sample"),
    Column("mean_pct", _F, "Mean signed return, percent (|return| when side is none)"),
    Column("median_pct", _F, "Median signed return, percent"),
    Column("hit_rate", _F, "Share that moved the predicted way (none: more than the median bar)"),
    Column("baseline_mean_pct", _F, "Same score over every bar of the coin at this horizon"),
    Column("baseline_hit_rate", _F, "Hit rate over every bar of the coin at this horizon"),
    Column("random_mean_pct", _F, "Mean signed return of the same calls at random bars"),
    Column("random_hit_rate", _F, "Hit rate of the same calls at random bars"),
    Column("random_p", _F, "Share of random-time draws whose mean reached mean_pct"),
    Column("effect_pct", _F, "mean_pct - baseline_mean_pct"),
    Column("ci_low_pct", _F, "95 % block-bootstrap interval of the effect, low"),
    Column("ci_high_pct", _F, "95 % block-bootstrap interval of the effect, high"),
    Column("episodes", _I, "Independent episodes (runs of overlapping windows): the blocks"),
    Column("p_value", _F, "Two-sided bootstrap p-value of effect = 0"),
    Column("q_value", _F, "Benjamini-Hochberg q-value across the whole table"),
    Column("mae_mean_pct", _F, "Mean maximum adverse excursion, percent (<= 0)"),
    Column("is_n", _I, "In-sample events (before the split)"),
    Column("is_mean_pct", _F, "In-sample mean signed return"),
    Column("is_hit_rate", _F, "In-sample hit rate"),
    Column("oos_n", _I, "Out-of-sample events (from the split on)"),
    Column("oos_mean_pct", _F, "Out-of-sample mean signed return"),
    Column("oos_hit_rate", _F, "Out-of-sample hit rate"),
    Column("split_ts", _TS, "Start of the out-of-sample period"),
    Column("first_ts", _TS, "First event in the sample"),
    Column("last_ts", _TS, "Last event in the sample"),
    Column("as_of", _TS, "When the scorecard was computed"),
)
SCHEMA = schema_of(COLUMNS)

# Every received outcome scored against its coin's baseline at the same horizon. The tables
# `signal_outcomes`, `received` (signal_id) and `bar_returns` (symbol, horizon, ret_pct) are
# registered by `compute_scorecard`.
SCORED_SQL = """
CREATE OR REPLACE TEMP VIEW scored AS
WITH base AS (
    SELECT symbol, horizon,
           avg(ret_pct) AS mean_ret,
           avg((ret_pct > 0)::DOUBLE) AS share_up,
           avg((ret_pct < 0)::DOUBLE) AS share_down,
           avg(abs(ret_pct)) AS mean_abs,
           median(abs(ret_pct)) AS median_abs
    FROM bar_returns
    GROUP BY symbol, horizon
),
big AS (
    SELECT r.symbol, r.horizon, avg((abs(r.ret_pct) > b.median_abs)::DOUBLE) AS share_big
    FROM bar_returns AS r JOIN base AS b USING (symbol, horizon)
    GROUP BY r.symbol, r.horizon
)
SELECT o.rule, o.level, o.symbol, o.horizon, o.side, o.ts, o.status, o.signed_pct, o.mae_pct,
       r.signal_id IS NOT NULL AS received,
       r.signal_id IS NOT NULL AND o.status = 'done' AS used,
       CASE WHEN o.side = 0 THEN o.signed_pct > b.median_abs ELSE o.signed_pct > 0 END AS hit,
       CASE WHEN o.side = 0 THEN b.mean_abs ELSE o.side * b.mean_ret END AS base_mean,
       CASE o.side WHEN 1 THEN b.share_up WHEN -1 THEN b.share_down ELSE g.share_big END
           AS base_hit,
       b.median_abs
FROM signal_outcomes AS o
LEFT JOIN received AS r USING (signal_id)
LEFT JOIN base AS b USING (symbol, horizon)
LEFT JOIN big AS g USING (symbol, horizon)
"""

# The counts and means of each cell; $split starts the out-of-sample period.
CELLS_SQL = """
SELECT rule, level, symbol, horizon, side,
       count(*) AS fired,
       count(*) FILTER (WHERE received) AS received,
       count(*) FILTER (WHERE received AND status = 'pending') AS pending,
       count(*) FILTER (WHERE used) AS n,
       avg(signed_pct) FILTER (WHERE used) AS mean_pct,
       median(signed_pct) FILTER (WHERE used) AS median_pct,
       avg(hit::DOUBLE) FILTER (WHERE used) AS hit_rate,
       avg(base_mean) FILTER (WHERE used) AS baseline_mean_pct,
       avg(base_hit) FILTER (WHERE used) AS baseline_hit_rate,
       avg(mae_pct) FILTER (WHERE used) AS mae_mean_pct,
       count(*) FILTER (WHERE used AND ts < $split) AS is_n,
       avg(signed_pct) FILTER (WHERE used AND ts < $split) AS is_mean_pct,
       avg(hit::DOUBLE) FILTER (WHERE used AND ts < $split) AS is_hit_rate,
       count(*) FILTER (WHERE used AND ts >= $split) AS oos_n,
       avg(signed_pct) FILTER (WHERE used AND ts >= $split) AS oos_mean_pct,
       avg(hit::DOUBLE) FILTER (WHERE used AND ts >= $split) AS oos_hit_rate,
       min(ts) FILTER (WHERE used) AS first_ts,
       max(ts) FILTER (WHERE used) AS last_ts,
       any_value(median_abs) AS median_abs
FROM scored
GROUP BY rule, level, symbol, horizon, side
ORDER BY rule, level, symbol, side, list_position($horizons, horizon)
"""

# Each cell's sample in time order: what the bootstrap resamples.
EVENTS_SQL = """
SELECT rule, level, symbol, horizon, side, epoch_ms(ts) AS ts_ms,
       signed_pct - base_mean AS excess
FROM scored
WHERE used
ORDER BY rule, level, symbol, horizon, side, ts
"""

CHECKS: dict[str, str] = {
    SCHEMA_CHECK: "Columns and types match the contract.",
    "unique_cell": "One row per rule, level, coin, horizon and side.",
    "consistent": "n <= received <= fired; rates in [0, 1]; q >= p; the interval brackets the"
    " effect; no statistics below the minimum sample.",
}
CHECK_SQL: dict[str, str] = {
    "unique_cell": "SELECT count(*) - count(DISTINCT (rule, level, symbol, horizon, side))"
    " FROM rows",
    "consistent": "SELECT count(*) FROM rows WHERE NOT (n <= received AND received <= fired"
    " AND coalesce(hit_rate BETWEEN 0 AND 1, true)"
    " AND coalesce(baseline_hit_rate BETWEEN 0 AND 1, true)"
    " AND coalesce(q_value BETWEEN p_value AND 1, true)"
    " AND coalesce(ci_low_pct <= effect_pct AND effect_pct <= ci_high_pct, true)"
    f" AND (n >= {MIN_EVENTS} OR p_value IS NULL))",
}


@dataclass(frozen=True)
class Cell:
    rule: str
    level: str
    symbol: str
    horizon: str
    side: int

    @property
    def key(self) -> str:
        return f"{self.rule}|{self.level}|{self.symbol}|{self.horizon}|{self.side}"


def bar_returns(
    bars: Mapping[str, PriceBars], horizons: Mapping[str, int]
) -> dict[tuple[str, str], np.ndarray]:
    """Every bar's finished outcome per (coin, horizon), aligned like a signal's: the pool
    the unconditional and random-time baselines are drawn from."""
    pools = {}
    for symbol, coin in bars.items():
        for horizon, horizon_ms in horizons.items():
            out = forward_returns(coin, coin.ts_ms, horizon_ms)
            pools[(symbol, horizon)] = out.ret_pct[out.status == DONE]
    return pools


def split_ts_ms(bars: Mapping[str, PriceBars], share: float = IN_SAMPLE_SHARE) -> int:
    """Where the out-of-sample period starts: `share` of the way through the price history."""
    starts = [int(b.ts_ms[0]) for b in bars.values() if len(b.ts_ms)]
    ends = [int(b.ts_ms[-1]) for b in bars.values() if len(b.ts_ms)]
    if not starts:
        return 0
    return int(min(starts) + share * (max(ends) - min(starts)))


def received_ids(con: duckdb.DuckDBPyConnection, policy: Policy) -> pa.Table:
    """The signal ids of `signal_outcomes` a user received under `policy`."""
    rows = con.execute(
        "SELECT DISTINCT signal_id, epoch_ms(ts) / 1000 AS ts_s, symbol, rule, level"
        " FROM signal_outcomes ORDER BY ts_s"
    ).fetchnumpy()
    keep = delivered(rows["ts_s"], rows["symbol"], rows["rule"], rows["level"], policy)
    return pa.table({"signal_id": pa.array(np.asarray(rows["signal_id"])[keep], pa.string())})


def prepare(
    con: duckdb.DuckDBPyConnection,
    bars: Mapping[str, PriceBars],
    horizons: Mapping[str, int],
    policy: Policy,
) -> dict[tuple[str, str], np.ndarray]:
    """Register what the SQL reads beside `signal_outcomes` (`bar_returns`, `received`) and
    the `scored` view; returns the baseline pools per (coin, horizon)."""
    pools = bar_returns(bars, horizons)
    returns = pa.table(
        {
            "symbol": pa.array([s for (s, _), r in pools.items() for _ in r], pa.string()),
            "horizon": pa.array([h for (_, h), r in pools.items() for _ in r], pa.string()),
            "ret_pct": pa.array(np.concatenate([*pools.values(), np.empty(0)]), _F),
        }
    )
    con.register("bar_returns", returns)
    con.register("received", received_ids(con, policy))
    con.execute(SCORED_SQL)
    return pools


def aggregate_cells(
    con: duckdb.DuckDBPyConnection, split_at: datetime, horizons: Sequence[str]
) -> list[dict[str, Any]]:
    """The counts and means of every cell (after `prepare`), in table order."""
    params = {"split": split_at, "horizons": list(horizons)}
    return con.sql(CELLS_SQL, params=params).to_arrow_table().to_pylist()


def compute_scorecard(
    con: duckdb.DuckDBPyConnection,
    bars: Mapping[str, PriceBars],
    horizons: Mapping[str, int],
    policy: Policy,
    as_of: datetime,
    seed: int = SEED,
) -> pa.Table:
    """The scorecard of the `signal_outcomes` relation of `con` against the coins' `bars`."""
    pools = prepare(con, bars, horizons, policy)
    split_at = datetime.fromtimestamp(split_ts_ms(bars) / 1000, UTC)
    rows = aggregate_cells(con, split_at, list(horizons))
    samples = _samples(con)
    for row in rows:
        cell = Cell(*(row[k] for k in KEY))
        stats = _cell_stats(cell, row, samples.get(cell.key), pools, horizons, seed)
        row.update(stats, side=Side(cell.side).word, split_ts=split_at, as_of=as_of)
    q = bh_qvalues(np.array([r["p_value"] if r["p_value"] is not None else math.nan for r in rows]))
    for row, value in zip(rows, q, strict=True):
        row["q_value"] = None if math.isnan(value) else float(value)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _samples(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    events = con.execute(EVENTS_SQL).fetchnumpy()
    keys = [
        Cell(*k).key
        for k in zip(*(events[c] for c in KEY), strict=True)  # type: ignore[arg-type]
    ]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if not keys:
        return out
    bounds = [0, *(i for i in range(1, len(keys)) if keys[i] != keys[i - 1]), len(keys)]
    ts_ms, excess = np.asarray(events["ts_ms"]), np.asarray(events["excess"], dtype=np.float64)
    for lo, hi in itertools.pairwise(bounds):
        out[keys[lo]] = (ts_ms[lo:hi], excess[lo:hi])
    return out


def _cell_stats(
    cell: Cell,
    row: Mapping[str, Any],
    sample: tuple[np.ndarray, np.ndarray] | None,
    pools: Mapping[tuple[str, str], np.ndarray],
    horizons: Mapping[str, int],
    seed: int,
) -> dict[str, Any]:
    empty: dict[str, Any] = dict.fromkeys(
        (
            "random_mean_pct",
            "random_hit_rate",
            "random_p",
            "effect_pct",
            "ci_low_pct",
            "ci_high_pct",
            "episodes",
            "p_value",
        )
    )
    if row["n"] and row["baseline_mean_pct"] is not None:
        empty["effect_pct"] = row["mean_pct"] - row["baseline_mean_pct"]
    pool = pools.get((cell.symbol, cell.horizon))
    if sample is None or row["n"] < MIN_EVENTS or pool is None or not len(pool):
        return empty
    ts_ms, excess = sample
    blocks = episodes(ts_ms, horizons[cell.horizon])
    empty["episodes"] = int(blocks[-1]) + 1
    if empty["episodes"] < MIN_EPISODES:
        return empty
    # One generator per cell, seeded by its key: a cell's numbers do not depend on the others.
    rng = np.random.default_rng([seed, zlib.crc32(cell.key.encode())])
    estimate = bootstrap_mean(excess, blocks, rng)
    chance = random_times(pool, cell.side, int(row["n"]), row["mean_pct"], row["median_abs"], rng)
    return {
        "random_mean_pct": chance.mean_pct,
        "random_hit_rate": chance.hit_rate,
        "random_p": chance.p,
        "effect_pct": estimate.mean,
        "ci_low_pct": estimate.low,
        "ci_high_pct": estimate.high,
        "episodes": empty["episodes"],
        "p_value": estimate.p,
    }


# ------------------------------------------------------------------ threshold sweep


@dataclass(frozen=True)
class Sweep:
    """A numeric rule's threshold grid: the magnitude it grades (`rules.METRICS`), the fixed
    floor the grid is scaled around, and evidence fields the hypothesis needs beyond the
    snapshot's own columns."""

    rule: Rule
    metric: str
    floor: Callable[[Thresholds], float]
    evidence: Mapping[str, Any]


SWEEPS: tuple[Sweep, ...] = (
    Sweep(Rule.FUNDING, "funding", lambda t: t.funding_high_pct, {}),
    Sweep(Rule.OI_CHANGE, "oi_change", lambda t: t.oi_change_high_pct, {}),
    Sweep(Rule.LIQUIDATIONS, "long_liq", lambda t: t.liq_long_high_usd, {"kind": "long"}),
    Sweep(Rule.RETAIL_POSITIONING, "retail_long", lambda t: t.retail_long_high_pct, {}),
    Sweep(Rule.SMART_MONEY, "smart_money", lambda t: t.smart_money_gap_pts, {}),
    Sweep(Rule.TAKER_FLOW, "taker_flow", lambda t: t.taker_buy_high_pct - 50, {}),
)


@dataclass(frozen=True)
class SweepResult:
    sweep: Sweep
    symbol: str
    floor: float  # the fixed threshold the grid multiplies
    points: list[SweepPoint]


def sweep_thresholds(
    snapshots: Sequence[Mapping[str, Any]],
    bars: Mapping[str, PriceBars],
    t: Thresholds,
    horizon_ms: int,
) -> list[SweepResult]:
    """n and hit rate over a grid of thresholds (multiples of each fixed floor) per numeric
    rule and coin, from the `market_snapshot` rows and the coins' bars."""
    results = []
    for symbol, coin in sorted(bars.items()):
        rows = [r for r in snapshots if r["symbol"] == symbol]
        if not rows:
            continue
        ts_ms = np.array([int(r["ts"].timestamp() * 1000) for r in rows], dtype=np.int64)
        out = forward_returns(coin, ts_ms, horizon_ms)
        pool = out.ret_pct[out.status == DONE]
        median_abs = float(np.median(np.abs(pool))) if len(pool) else math.nan
        snaps = [Snapshot.from_row(r) for r in rows]
        for sweep in SWEEPS:
            values = np.array([_num(METRICS[sweep.metric](s)) for s in snaps])
            sides = np.array(
                [
                    int(predicted_side(sweep.rule, {**r, **sweep.evidence}))
                    if np.isfinite(v)
                    else 0
                    for r, v in zip(rows, values, strict=True)
                ]
            )
            floor = sweep.floor(t)
            grid = [floor * m for m in SWEEP_MULTIPLES]
            points = threshold_sweep(values, sides, out.ret_pct, median_abs, grid)
            results.append(SweepResult(sweep, symbol, floor, points))
    return results


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------ the asset


def build_scorecard_asset(settings: Settings) -> dg.AssetsDefinition:
    horizons = usable_horizons(settings.interval_ms)

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description="Every rule's record over all history: per rule, level, coin, horizon and"
        " predicted side, n as received, mean/median signed return, hit rate vs baselines,"
        " bootstrap CI, BH q-value, in/out-of-sample; a forest plot and a threshold sweep.",
        deps=[
            dg.AssetDep(OUTCOMES, partition_mapping=dg.AllPartitionMapping()),
            dg.AssetDep(PRICE.name, partition_mapping=dg.AllPartitionMapping()),
            dg.AssetDep(SNAPSHOT, partition_mapping=dg.AllPartitionMapping()),
        ],
        automation_condition=refreshed_daily(REFRESH_CRON),
        kinds={"parquet", "duckdb"},
        metadata={"dagster/column_schema": column_schema(COLUMNS)},
        check_specs=[
            dg.AssetCheckSpec(name, asset=ASSET, description=text) for name, text in CHECKS.items()
        ],
    )
    def signal_scorecard(
        context: dg.AssetExecutionContext, lake: LakeResource, telegram: TelegramResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        as_of = datetime.now(UTC)
        store = lake.lake
        with lake.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            store.attach(con, OUTCOMES, store.days(OUTCOMES), OUTCOMES_SCHEMA)
            store.attach(con, PRICE.name, store.days(PRICE.name), PRICE.schema)
            bars = coin_bars(con, settings.symbols, settings.interval_ms)
            table = compute_scorecard(con, bars, horizons, telegram.policy(), as_of)
            snapshots = store.read_days(SNAPSHOT, store.days(SNAPSHOT))
        sweeps = (
            sweep_thresholds(snapshots.to_pylist(), bars, Thresholds(), horizons[SWEEP_HORIZON])
            if snapshots is not None and SWEEP_HORIZON in horizons
            else []
        )
        day = as_of.date()
        published = lake.publish(ASSET, table, [day], split_on=None)
        metadata = {**published.metadata, **_metadata(table, sweeps)}
        metadata.update(_pictures(store, day, table, sweeps))
        if not table.num_rows:
            context.log.warning(f"no {OUTCOMES} in the lake yet: the scorecard is empty")
        yield dg.MaterializeResult(metadata=metadata)
        yield from lake.check_results(ASSET, [day], SCHEMA, CHECK_SQL)

    return signal_scorecard


def _pictures(
    store: Lake, day: date, table: pa.Table, sweeps: Sequence[SweepResult]
) -> dict[str, Any]:
    """The forest plot and the sweep beside the day's Parquet, and inline for the UI."""
    metadata: dict[str, Any] = {}
    rows = table.to_pylist()
    if any(r["p_value"] is not None for r in rows):
        png = forest_png(rows)
        file = store.write_bytes(ASSET, day, FOREST_PICTURE, png)
        metadata["forest_plot"] = dg.MetadataValue.md(markdown_image(png, "scorecard"))
        metadata["forest_plot_path"] = dg.MetadataValue.path(file)
    if sweeps:
        png = sweep_png(sweeps)
        file = store.write_bytes(ASSET, day, SWEEP_PICTURE, png)
        metadata["threshold_sweep"] = dg.MetadataValue.md(markdown_image(png, "sweep"))
        metadata["threshold_sweep_path"] = dg.MetadataValue.path(file)
    return metadata


def _metadata(table: pa.Table, sweeps: Sequence[SweepResult]) -> dict[str, Any]:
    rows = table.to_pylist()
    tested = [r for r in rows if r["p_value"] is not None]
    found = [r for r in tested if r["q_value"] is not None and r["q_value"] < 0.05]
    shown = sorted(tested, key=lambda r: r["q_value"])[:PREVIEW_ROWS]
    sweep_rows = [
        f"| {s.sweep.rule} | {s.symbol} | {p.threshold:.4g} | {p.n} |"
        f" {_pct(p.hit_rate)} | {_num_text(p.mean_pct)} |"
        for s in sweeps
        for p in s.points
    ]
    return {
        "cells": len(rows),
        "cells_tested": len(tested),
        "cells_q_below_0_05": len(found),
        "scorecard": dg.MetadataValue.md(_markdown(shown))
        if shown
        else f"no cell has enough events yet (a cell needs n >= {MIN_EVENTS})",
        "threshold_sweep_table": dg.MetadataValue.md(
            "\n".join(
                [
                    f"| rule | coin | threshold | n | hit rate | mean signed % ({SWEEP_HORIZON}) |",
                    "|---|---|---|---|---|---|",
                    *sweep_rows,
                ]
            )
        )
        if sweep_rows
        else "no market_snapshot history yet",
        "duckdb_latest": dg.MetadataValue.md(
            f"```sql\nSELECT * FROM {ASSET}\nWHERE date = (SELECT max(date) FROM {ASSET})\n"
            "ORDER BY q_value\n```"
        ),
    }


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    head = "| rule | level | coin | horizon | side | n | hit | base | effect % | 95 % CI | q |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {r['level']} | {r['symbol']} | {r['horizon']} | {r['side']} |"
            f" {r['n']} | {_pct(r['hit_rate'])} | {_pct(r['baseline_hit_rate'])} |"
            f" {_num_text(r['effect_pct'])} |"
            f" [{_num_text(r['ci_low_pct'])}, {_num_text(r['ci_high_pct'])}] |"
            f" {_q(r['q_value'])} |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * 100:.0f} %"


def _q(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _num_text(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{digits}f}"
