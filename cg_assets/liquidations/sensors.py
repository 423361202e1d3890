"""Sensors that turn the sidecar's spool into runs and its silence into an incident.

The spool sensor's cursor is the last segment sequence number it handed to a run, and each run
key names its segment range, so a segment is requested exactly once, across daemon restarts,
and a burst of segments becomes one run rather than hundreds. While an ingestion run is queued
or running, the sensor waits, so there is one at a time and the next batches what arrived.

The health sensor reports a stale sidecar once per incident (and its recovery once), as
results of the `sidecar_fresh` check and an ops message, since a dead sidecar produces no
segments and therefore no runs to carry the news.
"""

import time
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.liquidations.assets import ASSET, sidecar_staleness, spool_dir, status_path
from cg_assets.resources import TelegramResource, send_ops
from cg_assets.settings import Settings
from cg_assets.telegram.markup import escape
from ws_sidecar.spool import Segment, list_segments, segment_time_bounds

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

MAX_SEGMENTS_PER_RUN = 2000
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Events can arrive a little after they happened; widen a batch's day range by this much.
LATE_EVENT_SLACK_MS = 10 * 60_000


def batch_days(segments: list[Segment], first_day: date, today: date) -> tuple[date, date]:
    """The partition range a batch of segments can touch, clipped to the partitions that exist.
    The bounds come from usable records only, so a bad timestamp cannot stop the sensor; a
    batch with none at all (every line corrupt) gets today, where its run finds nothing."""
    bounds = [b for s in segments if (b := segment_time_bounds(s.path)) is not None]
    if not bounds:
        return today, today
    lo = min(b[0] for b in bounds) - LATE_EVENT_SLACK_MS
    hi = max(b[1] for b in bounds)
    start = max(datetime.fromtimestamp(lo / 1000, UTC).date(), first_day)
    end = min(datetime.fromtimestamp(hi / 1000, UTC).date(), today)
    return start, max(start, end)


def build_liquidation_sensors(
    settings: Settings, job: "UnresolvedAssetJobDefinition"
) -> list[dg.SensorDefinition]:
    @dg.sensor(
        name="liquidation_spool_sensor",
        job=job,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Ingests new spool segments into liquidation_orders.",
    )
    def spool_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        after = int(context.cursor) if context.cursor else -1
        segments = list_segments(spool_dir(settings), after_seq=after)[:MAX_SEGMENTS_PER_RUN]
        if not segments:
            return dg.SkipReason(f"no spool segment after #{after}")
        in_flight = context.instance.get_runs_count(
            dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT)
        )
        if in_flight:
            # One ingestion at a time: a run costs seconds of CPU to start, so while one is
            # busy the segments wait and the next run takes them all as one batch.
            return dg.SkipReason(f"{len(segments)} segment(s) wait for the running ingestion")
        first, last = segments[0].seq, segments[-1].seq
        today = datetime.now(UTC).date()
        start, end = batch_days(segments, settings.start_date, today)
        request = dg.RunRequest(
            run_key=f"spool-{first}-{last}",
            run_config=dg.RunConfig(
                ops={ASSET: {"config": {"first_seq": first, "last_seq": last}}}
            ),
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=str(last))

    @dg.sensor(
        name="sidecar_health_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports a stale ws_sidecar (no status update for 60 s) once per incident,"
        " as a failed sidecar_fresh check and an ops message on Telegram.",
    )
    def health_sensor(
        context: dg.SensorEvaluationContext, telegram: TelegramResource
    ) -> dg.SensorResult | dg.SkipReason:
        now = time.time()
        stale, why = sidecar_staleness(status_path(settings), now)
        state = "stale" if stale else "fresh"
        if state == (context.cursor or "fresh"):
            return dg.SkipReason(f"sidecar still {state}: {why}")
        if stale:
            context.log.error(f"ws_sidecar is stale: {why}")
        else:
            context.log.info(f"ws_sidecar recovered: {why}")
        headline = "⚠️ ws_sidecar is <b>stale</b>" if stale else "✅ ws_sidecar recovered"
        outcome = send_ops(
            telegram,
            settings.data_dir,
            key=f"ops:sidecar-{state}:{int(now)}",
            rule=f"sidecar_{state}",
            lines=[headline, escape(why)],
        )
        context.log.info(f"ops alert: {outcome.status} {outcome.reason}".strip())
        evaluation = dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(ASSET),
            check_name="sidecar_fresh",
            passed=not stale,
            metadata={"reason": why},
            severity=dg.AssetCheckSeverity.ERROR,
        )
        return dg.SensorResult(asset_events=[evaluation], cursor=state)

    return [spool_sensor, health_sensor]
