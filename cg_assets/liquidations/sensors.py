"""Sensors that turn the sidecar's spool into runs and its silence into an incident.

The spool sensor requests whatever the lake has not recorded as ingested (`IngestedRanges`,
written by a run after its Parquet commit, never by the sensor), oldest first, at most
INGEST_MAX_EVENTS records a run and one run per INGEST_INTERVAL_S. So a failed run's segments
are simply still pending: the sensor requests them again once a back-off has passed (doubling
with each consecutive failure), and pages the ops chat when INGEST_ALERT_AFTER_FAILURES runs in
a row have failed, and again when ingestion recovers. Retrying here rather than through
Dagster's run retries works under any instance config and launcher, and a retry takes what
arrived meanwhile, so the job opts out of run retries (`dagster/max_retries: 0`).

A run key names the range and the ingestion run it follows, so requesting a failed range again
makes a new run, while a daemon that re-evaluates one tick after a crash cannot launch it twice.
While an ingestion run is queued or running the sensor waits: one run at a time, the next one
batching what arrived. A worker that dies without its run being marked failed would make that
wait last for good, which is why the instance config runs run monitoring and the job carries a
`dagster/max_runtime` (see `cg_assets.launcher`).

The health sensor reports a stale sidecar once per incident (and its recovery once), as results
of the `sidecar_fresh` check and an ops message, since a dead sidecar produces no segments and
therefore no runs to carry the news. It exists only where a sidecar is expected.
"""

import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.liquidations.assets import (
    ASSET,
    SIDECAR_CHECK,
    sidecar_staleness,
    spool_dir,
    status_path,
)
from cg_assets.liquidations.batches import pending, retry_delay_s, take_batch
from cg_assets.resources import TelegramResource, send_ops
from cg_assets.settings import Settings
from cg_assets.storage import IngestedRanges, Lake
from cg_assets.telegram.markup import escape
from ws_sidecar.spool import Segment, count_records, list_segments, segment_time_bounds

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

# CANCELING too: its worker may still be writing. Run monitoring bounds every one of these.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# A canceled run is someone's decision, not a fault: its batch is requested again at once.
OUTCOMES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
# Enough history to count failures until the back-off reaches its cap.
MIN_HISTORY = 12
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


def consecutive_failures(succeeded: Sequence[bool]) -> int:
    """Failed runs at the head of a newest-first history."""
    return next((i for i, ok in enumerate(succeeded) if ok), len(succeeded))


def ops_notice(succeeded: Sequence[bool], threshold: int) -> str | None:
    """The ops message a tick owes, from a newest-first history: "failing" when it sees the
    threshold-th failure in a row, "recovered" when it sees the success that ends such a
    streak, else None. Each such history lasts until the next run ends, and the message key
    names its run, so it goes out once."""
    if consecutive_failures(succeeded) == threshold:
        return "failing"
    if succeeded and succeeded[0] and consecutive_failures(succeeded[1:]) >= threshold:
        return "recovered"
    return None


def build_liquidation_sensors(
    settings: Settings,
    job: "UnresolvedAssetJobDefinition",
    clock: Callable[[], float] = time.time,
) -> list[dg.SensorDefinition]:
    record = IngestedRanges(Lake.for_settings(settings), ASSET)
    threshold = settings.ingest_alert_after_failures

    @dg.sensor(
        name="liquidation_spool_sensor",
        job=job,
        minimum_interval_seconds=settings.ingest_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Ingests the spool segments not yet recorded as ingested into"
        " liquidation_orders, retrying failed batches with back-off.",
    )
    def spool_sensor(
        context: dg.SensorEvaluationContext, telegram: TelegramResource
    ) -> dg.SensorResult | dg.SkipReason:
        instance = context.instance
        history = instance.get_run_records(
            dg.RunsFilter(job_name=job.name, statuses=OUTCOMES),
            limit=max(threshold, MIN_HISTORY) + 1,
        )
        succeeded = [r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in history]
        failures = consecutive_failures(succeeded)
        waiting = pending(list_segments(spool_dir(settings)), record.ranges())
        notice = ops_notice(succeeded, threshold)
        if notice:
            _page_ops(context, telegram, notice, history[0].dagster_run.run_id, failures, waiting)
        if not waiting:
            return dg.SkipReason("every spool segment is recorded as ingested")
        if instance.get_runs_count(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT)):
            # One ingestion at a time: a run costs seconds of CPU to start, so while one is
            # busy the segments wait and the next run takes them as one batch.
            return dg.SkipReason(f"{len(waiting)} segment(s) wait for the running ingestion")
        now = clock()
        if failures:
            last = history[0]
            ended = last.end_time or last.update_timestamp.timestamp()
            due = ended + retry_delay_s(failures, settings.ingest_retry_backoff_s)
            if now < due:
                return dg.SkipReason(
                    f"{failures} ingestion run(s) in a row failed; segments from"
                    f" #{waiting[0].seq} are retried in {due - now:.0f} s"
                )
        batch = list(
            take_batch(((s, count_records(s.path)) for s in waiting), settings.ingest_max_events)
        )
        first, last_seq = batch[0].seq, batch[-1].seq
        start, end = batch_days(batch, settings.start_date, datetime.fromtimestamp(now, UTC).date())
        [previous] = instance.get_runs(dg.RunsFilter(job_name=job.name), limit=1) or [None]
        after = f"-after-{previous.run_id[:8]}" if previous else ""
        request = dg.RunRequest(
            run_key=f"spool-{first}-{last_seq}{after}",
            run_config=dg.RunConfig(
                ops={ASSET: {"config": {"first_seq": first, "last_seq": last_seq}}}
            ),
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
                "cg/ingest_attempt": str(failures + 1),
            },
        )
        return dg.SensorResult(run_requests=[request])

    def _page_ops(
        context: dg.SensorEvaluationContext,
        telegram: TelegramResource,
        notice: str,
        run_id: str,
        failures: int,
        waiting: list[Segment],
    ) -> None:
        if notice == "failing":
            oldest = f"#{waiting[0].seq}" if waiting else "none"
            lines = [
                f"⚠️ liquidation ingestion <b>failing</b>: {failures} runs in a row",
                escape(
                    f"latest failed run {run_id}; {len(waiting)} segment(s) wait (oldest"
                    f" {oldest}) and stay in the spool; retried with back-off"
                ),
            ]
        else:
            lines = ["✅ liquidation ingestion recovered", escape(f"run {run_id} succeeded")]
        outcome = send_ops(
            telegram,
            settings.data_dir,
            key=f"ops:ingest-{notice}:{run_id}",
            rule=f"ingest_{notice}",
            lines=lines,
        )
        context.log.info(f"ops alert (ingestion {notice}): {outcome.status} {outcome.reason}")

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
            check_name=SIDECAR_CHECK,
            passed=not stale,
            metadata={"reason": why},
            severity=dg.AssetCheckSeverity.ERROR,
        )
        return dg.SensorResult(asset_events=[evaluation], cursor=state)

    return [spool_sensor, health_sensor] if settings.sidecar_expected else [spool_sensor]
