"""`liquidation_orders`: the sidecar's spool of live liquidations, with REST-filled gaps.

A run ingests a batch of spool segments (the sensor names the batch; the default is every
segment on disk) into the days its partition range covers, fills the gaps the batch records
from the REST order history, and merges each day under a per-day file lock so two runs
touching the same day cannot lose each other's rows. Re-running a batch is harmless: rows are
unique by event_id. Once a batch is stored, its segments older than SPOOL_RETENTION_DAYS are
deleted, so the spool does not grow without end.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa

from cg_assets.coinglass import coerce_row
from cg_assets.coinglass.plans import Plan
from cg_assets.liquidations.gapfill import GapReport, fetch_orders, fillable
from cg_assets.liquidations.orders import COLUMNS, SCHEMA, events_to_table, merge
from cg_assets.partitions import daily_partitions, day_end_ms, days_between, to_ms
from cg_assets.resources import CoinGlassResource, LakeResource
from cg_assets.settings import Settings
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.tables import column_schema
from ws_sidecar.parse import normalize_rest_order
from ws_sidecar.quarantine import QUARANTINE_FILE
from ws_sidecar.spool import list_segments, prune_segments, read_segment, read_summary_file

ASSET = "liquidation_orders"
GROUP = "liquidations"
STALE_AFTER_S = 60.0

CHECK_SQL = {
    "unique_event_id": "SELECT count(*) - count(DISTINCT event_id) FROM rows",
    "valid_values": (
        "SELECT count(*) FROM rows WHERE NOT (price > 0 AND usd_value > 0"
        " AND side IN ('long', 'short') AND source IN ('ws', 'rest'))"
    ),
}


class LiquidationIngestConfig(dg.Config):
    """Which spool segments to ingest; the sensor sets both ends, a manual run takes all."""

    first_seq: int = 0
    last_seq: int = -1
    gap_min_usd: float = 0.0


def spool_dir(settings: Settings) -> Path:
    return settings.data_dir / "spool"


def status_path(settings: Settings) -> Path:
    return settings.data_dir / "sidecar_status.json"


def sidecar_staleness(path: Path, now: float) -> tuple[bool, str]:
    """(stale, explanation) from the sidecar's status file."""
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return True, f"no status file at {path}: is `python -m ws_sidecar` running?"
    except json.JSONDecodeError as exc:
        return True, f"unreadable status file {path}: {exc}"
    age = now - float(status.get("updated_at", 0)) / 1000
    if age > STALE_AFTER_S:
        return True, f"status last written {age:.0f} s ago (limit {STALE_AFTER_S:.0f} s)"
    state = "connected" if status.get("connected") else "disconnected"
    return False, f"{state}, status written {age:.0f} s ago"


def build_liquidation_assets(
    settings: Settings,
) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        description="Every liquidation CoinGlass streamed, one row per order, gaps refilled.",
        partitions_def=daily_partitions(settings.start_date),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet", "duckdb"},
        metadata={
            "dagster/column_schema": column_schema(COLUMNS),
        },
        check_specs=[dg.AssetCheckSpec(name, asset=ASSET) for name in [SCHEMA_CHECK, *CHECK_SQL]],
    )
    def liquidation_orders(
        context: dg.AssetExecutionContext,
        config: LiquidationIngestConfig,
        coinglass: CoinGlassResource,
        lake: LakeResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        days = days_between(window.start, window.end)
        ws_events, gaps, segments, outside, problems = _read_spool(settings, config, set(days))
        if problems.skipped:
            context.log.warning(
                f"skipped {len(problems.skipped)} unusable spool record(s), e.g. "
                + "; ".join(problems.skipped[:5])
            )
        if problems.quarantined:
            context.log.warning(
                f"the sidecar quarantined {problems.quarantined} pushed item(s) while these"
                f" segments were written; see {settings.data_dir / QUARANTINE_FILE}"
            )
        if outside:
            context.log.warning(
                f"{outside} event(s) in segments {config.first_seq}..{config.last_seq} fall outside"
                f" {days[0]}..{days[-1]}; run this asset for their day to ingest them"
            )
        rest_events, reports = _fill_gaps(context, settings, config, coinglass, gaps, days)
        counts = {"added": 0, "duplicates": 0}

        def merge_day(existing: pa.Table | None, incoming: pa.Table) -> pa.Table | None:
            result = merge(existing, incoming)
            counts["added"] += result.added
            counts["duplicates"] += result.duplicates
            return result.table if result.added or existing is None else None

        published = lake.publish(
            ASSET, events_to_table(ws_events + rest_events), days, merge=merge_day
        )
        pruned = (
            prune_segments(
                spool_dir(settings),
                up_to_seq=segments[-1],
                older_than_s=settings.spool_retention_days * 86_400,
                now=time.time(),
            )
            if segments
            else []
        )
        yield dg.MaterializeResult(
            metadata={
                **published.metadata,
                "segments": f"{segments[0]}..{segments[-1]} ({len(segments)})"
                if segments
                else "none",
                "events_in_batch": len(ws_events),
                "rest_rows": len(rest_events),
                "added": counts["added"],
                "duplicates_skipped": counts["duplicates"],
                "outside_range": outside,
                "quarantined_in_sidecar": problems.quarantined,
                "invalid_in_spool": len(problems.skipped),
                "segments_pruned": len(pruned),
                "gaps": dg.MetadataValue.json([r.__dict__ for r in reports]),
                "unfillable_gaps": sum(r.status == "unfillable" for r in reports),
            }
        )
        yield from lake.check_results(ASSET, days, SCHEMA, CHECK_SQL)

    @dg.asset_check(
        asset=ASSET,
        name="sidecar_fresh",
        description=f"The sidecar rewrote its status file within the last {STALE_AFTER_S:.0f} s.",
    )
    def sidecar_fresh() -> dg.AssetCheckResult:
        stale, why = sidecar_staleness(status_path(settings), time.time())
        return dg.AssetCheckResult(passed=not stale, description=why)

    return liquidation_orders, sidecar_fresh


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


@dataclass
class SpoolProblems:
    """Bad input met by a batch: records its segments hold that are not usable (each as
    "seg N line L: reason"), and the items the sidecar quarantined while writing them."""

    skipped: list[str] = field(default_factory=list)
    quarantined: int = 0


def _read_spool(
    settings: Settings, config: LiquidationIngestConfig, days: set[date]
) -> tuple[list[dict], list[dict], list[int], int, SpoolProblems]:
    ws_events: list[dict] = []
    gaps: list[dict] = []
    seqs: list[int] = []
    outside = 0
    problems = SpoolProblems()
    for segment in list_segments(spool_dir(settings), after_seq=config.first_seq - 1):
        if 0 <= config.last_seq < segment.seq:
            break
        contents = read_segment(segment.path)
        summary = read_summary_file(segment.path)
        problems.quarantined += summary.quarantined if summary else 0
        problems.skipped += [
            f"seg {segment.seq} line {r.line}: {r.reason}" for r in contents.skipped
        ]
        seqs.append(segment.seq)
        gaps.extend(contents.gaps)
        for event in contents.events:
            if _day(event["time"]) in days:
                ws_events.append(event)
            else:
                outside += 1
    return ws_events, gaps, seqs, outside, problems


def _fill_gaps(
    context: dg.AssetExecutionContext,
    settings: Settings,
    config: LiquidationIngestConfig,
    coinglass: CoinGlassResource,
    gaps: list[dict],
    days: list[date],
) -> tuple[list[dict], list[GapReport]]:
    run_start = to_ms(datetime.combine(days[0], datetime.min.time(), UTC))
    run_end = day_end_ms(days[-1])
    now_ms = int(time.time() * 1000)
    events: list[dict] = []
    reports: list[GapReport] = []
    for gap in gaps:
        start, end = max(int(gap["start"]), run_start), min(int(gap["end"]), run_end)
        if start >= end:
            continue
        if settings.plan.rank < Plan.STANDARD.rank:
            reason = (
                f"liquidation order history needs the Standard plan (CG_PLAN={settings.plan.value})"
            )
            reports.append(GapReport(start, end, "unfillable", reason=reason))
            context.log.warning(f"gap {start}..{end} unfillable: {reason}")
            continue
        window = fillable(start, end, now_ms)
        if window is None:
            reports.append(
                GapReport(start, end, "unfillable", reason="older than the 7-day REST history")
            )
            continue
        rows = [
            normalize_rest_order(coerce_row(row))
            for coin in settings.symbols
            for exchange in settings.exchanges
            for row in fetch_orders(
                coinglass.client.get, exchange, coin, *window, config.gap_min_usd
            )
        ]
        events.extend(rows)
        partial = window[0] > start
        reports.append(
            GapReport(
                start,
                end,
                "partial" if partial else "filled",
                rows=len(rows),
                reason="older part beyond the 7-day REST history" if partial else "",
            )
        )
        context.log.info(f"gap {start}..{end}: {len(rows)} order(s) from REST")
    return events, reports
