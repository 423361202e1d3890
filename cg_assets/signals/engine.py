"""`signals`: the rules applied to every `market_snapshot` row, one lake row per signal.

A run evaluates the snapshot rows of its partition days. The adaptive thresholds need each
coin's history, so the run also reads the snapshot days of the trailing window before them.
The heatmap-zone rule reads `composite_heatmap` when the lake has it; without it the rule is
skipped and the reason recorded, so the other rules never wait for the heatmaps.
"""

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import Field

from cg_assets.automation import follows_inputs
from cg_assets.heatmaps.composite import ASSET as HEATMAP
from cg_assets.heatmaps.composite import SCHEMA as HEATMAP_SCHEMA
from cg_assets.market.series import SYMBOL, TS
from cg_assets.partitions import daily_partitions, days_between, lookback
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings
from cg_assets.signals.percentiles import Percentiles, rolling_percentiles
from cg_assets.signals.preview import markdown_table
from cg_assets.signals.rules import (
    LEVELS,
    METRICS,
    Rule,
    Signal,
    Snapshot,
    Thresholds,
    Zone,
    evaluate,
    skipped_rules,
)
from cg_assets.signals.snapshot import ASSET as SNAPSHOT
from cg_assets.signals.snapshot import GROUP, HOUR_MS
from cg_assets.storage import Lake
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import Column, column_schema, schema_of

ASSET = "signals"
# A composite-heatmap window gives a bar its zones when it ended by the bar's close and at most
# this many bars before it (the composite runs every few minutes; an older window means it
# stopped, and its zones would be stale).
ZONE_MAX_AGE_BARS = 2

PREVIEW_ROWS = 12
PREVIEW = ("ts", "symbol", "level", "rule", "title")

COLUMNS: tuple[Column, ...] = (
    Column(TS.name, TS.type, "Start of the snapshot bar the signal was found on, UTC"),
    SYMBOL,
    Column("rule", pa.string(), f"Rule id: {', '.join(Rule)}"),
    Column("level", pa.string(), "HIGH, MEDIUM or LOW"),
    Column("title", pa.string(), "One line of plain text"),
    Column("evidence", pa.string(), "JSON object: the values, cuts and their basis"),
    Column("signal_id", pa.string(), "Hash of (ts, symbol, rule): stable across re-runs"),
)
SCHEMA = schema_of(COLUMNS)
SHARES_IN_EVIDENCE = ("retail_long_pct", "top_account_long_pct", "taker_buy_share_pct")

CHECKS: dict[str, str] = {
    SCHEMA_CHECK: "Columns and types match the contract.",
    "unique_signal_id": "No two rows share a signal_id (one row per ts, symbol and rule).",
    "value_ranges": "Known levels and rules, one-line titles, JSON-object evidence whose"
    " shares lie within 0-100.",
}
CHECK_SQL: dict[str, str] = {
    "unique_signal_id": "SELECT count(*) - count(DISTINCT signal_id) FROM rows",
    "value_ranges": "SELECT count(*) FROM rows WHERE "
    + " OR ".join(
        [
            f"level NOT IN ({', '.join(repr(str(lv)) for lv in LEVELS)})",
            f"rule NOT IN ({', '.join(repr(str(r)) for r in Rule)})",
            "title = ''",
            "contains(title, chr(10))",
            "coalesce(try(json_type(evidence)) <> 'OBJECT', true)",
        ]
        + [
            f"try(CAST(json_extract(evidence, '$.{k}') AS DOUBLE)) NOT BETWEEN 0 AND 100"
            for k in SHARES_IN_EVIDENCE
        ]
    ),
}

# For each snapshot, the newest composite-heatmap window that ended by the close of its bar,
# no more than ZONE_MAX_AGE_BARS bars before it; that window's buckets are the zones.
ZONES_SQL = """
WITH windows AS (
    SELECT DISTINCT symbol, ts FROM composite_heatmap
),
picked AS (
    SELECT k.ts AS snapshot_ts, k.symbol, w.ts AS heatmap_ts
    FROM snapshot_keys AS k
    ASOF JOIN windows AS w ON w.symbol = k.symbol AND w.ts <= k.ts + $interval
    WHERE k.ts + $interval - w.ts <= $max_age
)
SELECT p.snapshot_ts, p.symbol, c.price_low, c.price_high, c.score
FROM picked AS p
JOIN composite_heatmap AS c ON c.symbol = p.symbol AND c.ts = p.heatmap_ts
ORDER BY p.snapshot_ts, p.symbol, c.price_low
"""

_D = Thresholds()


class SignalsConfig(dg.Config):
    """Every threshold of the rules; the defaults are the product's documented values."""

    funding_high_pct: float = Field(
        default=_D.funding_high_pct, description="Funding per 8 h above this: HIGH (percent)."
    )
    funding_negative_high_pct: float = Field(
        default=_D.funding_negative_high_pct, description="Funding per 8 h below this: HIGH."
    )
    funding_medium_abs_pct: float = Field(
        default=_D.funding_medium_abs_pct, description="|Funding per 8 h| above this: MEDIUM."
    )
    oi_change_high_pct: float = Field(
        default=_D.oi_change_high_pct, description="|OI change over 1 h| above this: HIGH."
    )
    oi_change_medium_pct: float = Field(
        default=_D.oi_change_medium_pct, description="|OI change over 1 h| above this: MEDIUM."
    )
    liq_long_high_usd: float = Field(
        default=_D.liq_long_high_usd, description="Longs liquidated in 1 h above this: HIGH."
    )
    liq_short_high_usd: float = Field(
        default=_D.liq_short_high_usd, description="Shorts liquidated in 1 h above this: HIGH."
    )
    liq_total_medium_usd: float = Field(
        default=_D.liq_total_medium_usd, description="All liquidations in 1 h above this: MEDIUM."
    )
    retail_long_high_pct: float = Field(
        default=_D.retail_long_high_pct, description="Retail long share above this: HIGH."
    )
    retail_short_medium_pct: float = Field(
        default=_D.retail_short_medium_pct, description="Retail short share above this: MEDIUM."
    )
    smart_money_gap_pts: float = Field(
        default=_D.smart_money_gap_pts,
        description="|Top-trader long % - retail long %| at least this: HIGH.",
    )
    taker_buy_high_pct: float = Field(
        default=_D.taker_buy_high_pct, description="Taker buy share above this: MEDIUM."
    )
    taker_buy_low_pct: float = Field(
        default=_D.taker_buy_low_pct, description="Taker buy share below this: MEDIUM."
    )
    heatmap_min_score: float = Field(
        default=_D.heatmap_min_score, description="Composite score a liquidity zone needs."
    )
    heatmap_zone_level: str = Field(
        default=_D.heatmap_zone_level, description="Level of a liquidity-zone signal."
    )
    confluence_min_rules: int = Field(
        default=_D.confluence_min_rules,
        description="Independent rules that must fire together for a confluence signal.",
    )
    adaptive: bool = Field(
        default=_D.adaptive, description="Raise the fixed floors by each coin's percentiles."
    )
    adaptive_window_days: int = Field(
        default=_D.adaptive_window_days, description="Trailing window of the percentiles, days."
    )
    adaptive_min_samples: int = Field(
        default=_D.adaptive_min_samples,
        description="Snapshots a coin needs in the window before its percentiles are used.",
    )

    def thresholds(self) -> Thresholds:
        """Validated thresholds; a ThresholdsError names each bad field and value."""
        return Thresholds(**self.model_dump())


@dataclass
class EngineRun:
    """What one evaluation found, and what it could not evaluate and why."""

    signals: list[Signal] = field(default_factory=list)
    snapshots: int = 0
    skipped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    heatmap: str = ""
    history_samples: dict[str, int] = field(default_factory=dict)


def run_engine(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    days: Sequence[date],
    t: Thresholds,
    interval_ms: int,
    window_label: str,
) -> EngineRun:
    """Evaluate the snapshot rows of `days` against the rules."""
    first = datetime.combine(days[0], datetime.min.time(), UTC)
    end = datetime.combine(days[-1], datetime.min.time(), UTC) + timedelta(days=1)
    history_start = first - timedelta(days=t.adaptive_window_days if t.adaptive else 0)
    stored = lake.read_days(SNAPSHOT, days_between(history_start, end))
    history = [Snapshot.from_row(r) for r in stored.to_pylist()] if stored is not None else []
    targets = sorted((s for s in history if first <= s.ts < end), key=lambda s: (s.symbol, s.ts))
    run = EngineRun(snapshots=len(targets))
    if not targets:
        return run
    con.execute("SET TimeZone = 'UTC'")
    adaptive = (
        rolling_percentiles(
            con, metric_table(history), timedelta(days=t.adaptive_window_days), first
        )
        if t.adaptive
        else {}
    )
    zones, run.heatmap = _zones(con, lake, days, targets, interval_ms)
    no_zones = run.heatmap if zones is None else "no composite_heatmap window near the bar"
    recent: dict[str, list[Signal]] = defaultdict(list)
    for snap in targets:
        key = (snap.ts, snap.symbol)
        coin_zones = None if zones is None else zones.get(key)
        for rule, reason in skipped_rules(snap, coin_zones, no_zones).items():
            run.skipped[rule][reason] += 1
        hour_ago = snap.ts - timedelta(milliseconds=HOUR_MS)
        earlier = [s for s in recent[snap.symbol] if s.ts > hour_ago]
        found = evaluate(snap, t, coin_zones, adaptive.get(key, {}), window_label, earlier)
        recent[snap.symbol] = [*earlier, *(s for s in found if s.rule is not Rule.CONFLUENCE)]
        run.signals.extend(found)
    run.history_samples = _latest_samples(targets, adaptive)
    return run


def metric_table(history: Sequence[Snapshot]) -> pa.Table:
    """The long table (ts, symbol, metric, value) the rolling percentiles are taken over."""
    rows = [
        {"ts": s.ts, "symbol": s.symbol, "metric": name, "value": value}
        for s in history
        for name, metric in METRICS.items()
        if (value := metric(s)) is not None
    ]
    schema = pa.schema(
        [
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("symbol", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _zones(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    days: Sequence[date],
    targets: Sequence[Snapshot],
    interval_ms: int,
) -> tuple[dict[tuple[datetime, str], list[Zone]] | None, str]:
    if not lake.has_data(HEATMAP):
        return None, f"{HEATMAP} is not in the lake yet (heatmap_zone skipped)"
    if not lake.attach(con, HEATMAP, [days[0] - timedelta(days=1), *days], HEATMAP_SCHEMA):
        return None, f"{HEATMAP} has no rows for {days[0]}..{days[-1]} (heatmap_zone skipped)"
    keys = pa.table(
        {
            "ts": pa.array([s.ts for s in targets], pa.timestamp("ms", tz="UTC")),
            "symbol": pa.array([s.symbol for s in targets], pa.string()),
        }
    )
    con.register("snapshot_keys", keys)
    interval = timedelta(milliseconds=interval_ms)
    rows = con.execute(
        ZONES_SQL, {"interval": interval, "max_age": interval * ZONE_MAX_AGE_BARS}
    ).fetchall()
    zones: dict[tuple[datetime, str], list[Zone]] = defaultdict(list)
    for ts, symbol, low, high, score in rows:
        zones[(ts, symbol)].append(Zone(low, high, score))
    return dict(zones), f"{HEATMAP}: zones for {len(zones)} of {len(targets)} snapshot(s)"


def _latest_samples(
    targets: Sequence[Snapshot], adaptive: Mapping[tuple[datetime, str], Mapping[str, Percentiles]]
) -> dict[str, int]:
    latest = {s.symbol: (s.ts, s.symbol) for s in targets}
    return {
        symbol: max((p.samples for p in adaptive.get(key, {}).values()), default=0)
        for symbol, key in sorted(latest.items())
    }


def signals_table(signals: Sequence[Signal]) -> pa.Table:
    return pa.Table.from_pylist([s.to_row() for s in signals], schema=SCHEMA)


def build_signals_asset(settings: Settings) -> dg.AssetsDefinition:
    window_label = settings.interval if settings.interval_ms > HOUR_MS else "1h"

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description="Rule-based signals per coin and bar (HIGH/MEDIUM/LOW) with their evidence,"
        " confluence of independent rules, and thresholds adapted to each coin's history.",
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "duckdb"},
        deps=[
            # The adaptive thresholds read the trailing window of the default config; a run
            # configured with a longer adaptive_window_days reads days the graph does not show.
            dg.AssetDep(SNAPSHOT, partition_mapping=lookback(_D.adaptive_window_days)),
            # The zones of a day's first bars come from the windows of the day before.
            dg.AssetDep(HEATMAP, partition_mapping=lookback(1)),
        ],
        # The zones are optional (the heatmap_zone rule is skipped without them): a heatmap
        # rebuilt every 10 minutes neither triggers a re-evaluation nor holds one back.
        automation_condition=follows_inputs(ignore=[HEATMAP]),
        metadata={"dagster/column_schema": column_schema(COLUMNS)},
        check_specs=[
            dg.AssetCheckSpec(name, asset=ASSET, description=text) for name, text in CHECKS.items()
        ],
    )
    def signals(
        context: dg.AssetExecutionContext, config: SignalsConfig, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        t = config.thresholds()
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        with lake.connect() as con:
            run = run_engine(con, lake.lake, days, t, settings.interval_ms, window_label)
        if not run.snapshots:
            context.log.warning(
                f"no {SNAPSHOT} rows for {days[0]}..{days[-1]}: materialize {SNAPSHOT} first"
            )
        if run.heatmap:
            context.log.info(run.heatmap)
        published = lake.publish(ASSET, signals_table(run.signals), days)
        yield dg.MaterializeResult(metadata={**published.metadata, **_metadata(run, t)})
        yield from lake.check_results(ASSET, days, SCHEMA, CHECK_SQL)

    return signals


def _metadata(run: EngineRun, t: Thresholds) -> dict[str, Any]:
    """What the signals add to the lake's standard metadata (the preview shows titles)."""
    by_level = Counter(str(s.level) for s in run.signals)
    by_rule = Counter(str(s.rule) for s in run.signals)
    skipped = {
        rule: {"snapshots": sum(reasons.values()), "reason": reasons.most_common(1)[0][0]}
        for rule, reasons in sorted(run.skipped.items())
    }
    latest = sorted(run.signals, key=lambda s: (s.ts, s.level.rank))[-PREVIEW_ROWS:]
    rows = [{**s.to_row(), "ts": s.ts} for s in reversed(latest)]
    return {
        "snapshots_evaluated": run.snapshots,
        **{f"signals_{lv.lower()}": by_level.get(str(lv), 0) for lv in LEVELS},
        "signals_by_rule": dg.MetadataValue.json(dict(sorted(by_rule.items()))),
        "skipped_rules": dg.MetadataValue.json(skipped),
        "heatmap": run.heatmap or "no snapshots evaluated",
        "history_samples": dg.MetadataValue.json(run.history_samples),
        "thresholds": dg.MetadataValue.json(asdict(t)),
        "preview": dg.MetadataValue.md(markdown_table(rows, PREVIEW)),
    }
