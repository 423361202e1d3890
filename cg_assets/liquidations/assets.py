"""`liquidation_orders`: the sidecar's spool of live liquidations, with REST-filled gaps.

A run ingests a batch of spool segments: by default the next ones not yet recorded as ingested
(`IngestedRanges`, beside the lake), oldest first and at most INGEST_MAX_EVENTS records (the
sensor names its batch by both ends). Each segment becomes Arrow columns as soon as it is read,
so a run never holds its batch as Python dicts. The gaps the batch records are refilled from
the REST order history, and every row is merged into its own UTC day, one day at a time under
the day's file lock: also a day outside the run's partition range, so no event is left behind
because of the range it was requested with. Rows are unique by event_id, so ingesting a batch
twice is harmless.

Only once every day is committed does the run record its segment range as ingested; a run that
fails, or is killed, before that leaves its segments pending, and the sensor requests them
again. Retention then deletes segments older than SPOOL_RETENTION_DAYS below the first pending
one (never the newest), so no segment is deleted before it is stored.
"""

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa

from cg_assets.coinglass import coerce_row
from cg_assets.coinglass.plans import Plan
from cg_assets.liquidations.batches import pending, take_batch, watermark
from cg_assets.liquidations.gapfill import GapReport, fetch_orders, fillable
from cg_assets.liquidations.orders import COLUMNS, SCHEMA, events_to_table, merge
from cg_assets.liquidations.triggers import gap_filled_minutes
from cg_assets.partitions import daily_partitions, days_between, to_ms
from cg_assets.resources import COINGLASS_POOL, CoinGlassResource, LakeResource
from cg_assets.settings import Settings
from cg_assets.storage import IngestedRanges
from cg_assets.storage.checks import SCHEMA_CHECK
from cg_assets.storage.ingested import SeqRange
from cg_assets.tables import column_schema, days_in, split_days
from ws_sidecar.parse import normalize_rest_order
from ws_sidecar.quarantine import QUARANTINE_FILE
from ws_sidecar.spool import (
    Segment,
    SpoolPath,
    list_segments,
    prune_segments,
    read_segment,
    read_summary_file,
)
from ws_sidecar.store import open_store

ASSET = "liquidation_orders"
GROUP = "liquidations"
# Materialization metadata: the recent coin-minutes of gap-filled orders (a segment summary).
LATE_MINUTES = "gap_filled_minutes"
SIDECAR_CHECK = "sidecar_fresh"
STALE_AFTER_S = 60.0

CHECK_SQL = {
    "unique_event_id": "SELECT count(*) - count(DISTINCT event_id) FROM rows",
    "valid_values": (
        "SELECT count(*) FROM rows WHERE NOT (price > 0 AND usd_value > 0"
        " AND side IN ('long', 'short') AND source IN ('ws', 'rest'))"
    ),
}


class LiquidationIngestConfig(dg.Config):
    """Which spool segments to ingest: those between first_seq and last_seq (-1: no bound)
    not yet recorded as ingested, oldest first, up to INGEST_MAX_EVENTS records. The defaults
    (a manual run) take the next batch the sensor would; `reingest` takes recorded segments
    of the range too."""

    first_seq: int = -1
    last_seq: int = -1
    reingest: bool = False
    gap_min_usd: float = 0.0


@dataclass
class SpoolBatch:
    """The segments a run ingests, their events as Arrow and the gaps they record, with the
    bad input met: records the segments hold that are not usable ("seg N line L: reason"),
    and the items the sidecar quarantined while writing them."""

    seqs: list[int]
    events: pa.Table
    gaps: list[dict]
    skipped: list[str] = field(default_factory=list)
    quarantined: int = 0


def spool_dir(settings: Settings) -> SpoolPath:
    """The spool the readers read: `<CG_LAKE_URL>/spool`, by default `CG_DATA_DIR/spool`
    itself; elsewhere the sidecar publishes its segments there (`ws_sidecar.publish`)."""
    return open_store(settings.lake_url or settings.data_dir).path("spool")


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
) -> tuple[dg.AssetsDefinition, list[dg.AssetChecksDefinition]]:
    """The asset, and the `sidecar_fresh` check where a sidecar is expected
    (`Settings.sidecar_expected`): without one, a stale status file is no incident."""

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
        pool=COINGLASS_POOL,
    )
    def liquidation_orders(
        context: dg.AssetExecutionContext,
        config: LiquidationIngestConfig,
        coinglass: CoinGlassResource,
        lake: LakeResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window = context.partition_time_window
        run_days = days_between(window.start, window.end)
        spool = spool_dir(settings)
        record = IngestedRanges(lake.lake, ASSET)
        chosen = candidates(list_segments(spool), record.ranges(), config)
        batch = read_batch(chosen, settings.ingest_max_events)
        waiting = len(chosen) - len(batch.seqs)
        if waiting:
            context.log.info(
                f"{waiting} segment(s) wait for the next run (INGEST_MAX_EVENTS="
                f"{settings.ingest_max_events} records per run)"
            )
        rest_events, reports = _fill_gaps(context, settings, config, coinglass, batch.gaps)
        late = gap_filled_minutes(
            rest_events,
            set(batch.events["event_id"].to_pylist()) if rest_events else set(),
            int(time.time() * 1000),
        )
        incoming = pa.concat_tables([batch.events, events_to_table(rest_events)])
        days, outside, early = target_days(incoming, run_days, settings.start_date)
        if early:
            context.log.warning(
                f"{early} event(s) fall before CG_START_DATE={settings.start_date}; not stored"
            )
        if batch.skipped:
            context.log.warning(
                f"skipped {len(batch.skipped)} unusable spool record(s), e.g. "
                + "; ".join(batch.skipped[:5])
            )
        if batch.quarantined:
            context.log.warning(
                f"the sidecar quarantined {batch.quarantined} pushed item(s) while these"
                f" segments were written; see {settings.data_dir / QUARANTINE_FILE}"
            )
        counts = {"added": 0, "duplicates": 0}

        def merge_day(existing: pa.Table | None, incoming: pa.Table) -> pa.Table | None:
            result = merge(existing, incoming)
            counts["added"] += result.added
            counts["duplicates"] += result.duplicates
            return result.table if result.added or existing is None else None

        published = lake.publish(ASSET, incoming, days, merge=merge_day)
        # Only now, with every day committed, do the segments count as ingested.
        ranges = record.add(batch.seqs[0], batch.seqs[-1]) if batch.seqs else record.ranges()
        pruned = prune_segments(
            spool,
            up_to_seq=watermark(list_segments(spool), ranges),
            older_than_s=settings.spool_retention_days * 86_400,
            now=time.time(),
        )
        yield dg.MaterializeResult(
            metadata={
                **published.metadata,
                "segments": _describe(batch.seqs),
                "segments_waiting": waiting,
                "ingested_ranges": _describe_ranges(ranges),
                "events_in_batch": batch.events.num_rows,
                "rest_rows": len(rest_events),
                "added": counts["added"],
                "duplicates_skipped": counts["duplicates"],
                "outside_range": outside,
                "before_start_date": early,
                "quarantined_in_sidecar": batch.quarantined,
                "invalid_in_spool": len(batch.skipped),
                "segments_pruned": len(pruned),
                "gaps": dg.MetadataValue.json([r.__dict__ for r in reports]),
                "unfillable_gaps": sum(r.status == "unfillable" for r in reports),
                # What the heads-up sensor reads: bursts the live stream missed.
                LATE_MINUTES: dg.MetadataValue.json(json.loads(late.to_json())),
            }
        )
        yield from lake.check_results(ASSET, days, SCHEMA, CHECK_SQL)

    @dg.asset_check(
        asset=ASSET,
        name=SIDECAR_CHECK,
        description=f"The sidecar rewrote its status file within the last {STALE_AFTER_S:.0f} s.",
    )
    def sidecar_fresh() -> dg.AssetCheckResult:
        stale, why = sidecar_staleness(status_path(settings), time.time())
        return dg.AssetCheckResult(passed=not stale, description=why)

    return liquidation_orders, [sidecar_fresh] if settings.sidecar_expected else []


def candidates(
    segments: list[Segment], ranges: list[SeqRange], config: LiquidationIngestConfig
) -> list[Segment]:
    """The segments of the configured range a run may take, oldest first, before the cap."""
    chosen = segments if config.reingest else pending(segments, ranges)
    return [
        s
        for s in chosen
        if s.seq >= config.first_seq and (config.last_seq < 0 or s.seq <= config.last_seq)
    ]


def read_batch(segments: Iterable[Segment], max_records: int) -> SpoolBatch:
    """Read segments in order until `max_records` (at least one segment), each turned into
    Arrow before the next is parsed."""
    parsed = ((s, read_segment(s.path)) for s in segments)
    sized = (((s, c), len(c.events) + len(c.gaps)) for s, c in parsed)
    seqs: list[int] = []
    tables: list[pa.Table] = []
    gaps: list[dict] = []
    skipped: list[str] = []
    quarantined = 0
    for segment, contents in take_batch(sized, max_records):
        seqs.append(segment.seq)
        tables.append(events_to_table(contents.events))
        gaps.extend(contents.gaps)
        skipped += [f"seg {segment.seq} line {r.line}: {r.reason}" for r in contents.skipped]
        summary = read_summary_file(segment.path)
        quarantined += summary.quarantined if summary else 0
    events = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return SpoolBatch(seqs, events, gaps, skipped, quarantined)


def target_days(
    table: pa.Table, run_days: list[date], first_day: date
) -> tuple[list[date], int, int]:
    """The days to merge into: the run's partitions and every day a row falls on from the
    first partition on. Also how many rows land outside the run's range, and how many fall
    before the first partition (no partition can hold them)."""
    found = days_in(table)
    outside = [d for d in found if d >= first_day and d not in run_days]
    early = [d for d in found if d < first_day]

    def rows(days: list[date]) -> int:
        return sum(part.num_rows for part in split_days(table, days).values())

    return sorted({*run_days, *outside}), rows(outside), rows(early)


def _describe(seqs: list[int]) -> str:
    return f"{seqs[0]}..{seqs[-1]} ({len(seqs)})" if seqs else "none"


def _describe_ranges(ranges: list[SeqRange]) -> str:
    return ", ".join(f"{lo}..{hi}" for lo, hi in ranges) or "none"


def _fill_gaps(
    context: dg.AssetExecutionContext,
    settings: Settings,
    config: LiquidationIngestConfig,
    coinglass: CoinGlassResource,
    gaps: list[dict],
) -> tuple[list[dict], list[GapReport]]:
    """Refill each gap over its whole span (from the first partition on): its rows are stored
    in their own days, whatever the run's range."""
    first_ms = to_ms(datetime.combine(settings.start_date, datetime.min.time(), UTC))
    now_ms = int(time.time() * 1000)
    events: list[dict] = []
    reports: list[GapReport] = []
    for gap in gaps:
        start, end = max(int(gap["start"]), first_ms), min(int(gap["end"]), now_ms)
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
        fetched = [
            row
            for coin in settings.symbols
            for exchange in settings.exchanges
            for row in fetch_orders(
                coinglass.client.get, exchange, coin, *window, config.gap_min_usd
            )
        ]
        received_at = int(time.time() * 1000)
        rows = [normalize_rest_order(coerce_row(row), received_at) for row in fetched]
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
