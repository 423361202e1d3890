"""Evaluate each bar soon after the market refresh has stored it, again half an hour later, and
finalize yesterday.

The hourly tick runs a couple of minutes after `market_hourly_refresh` (HH:05) and targets the
day of the last closed bar, so the 00:07 tick still evaluates yesterday's 23:00 bar. The recheck
at HH:37 evaluates the same bar again: a refresh that finished after HH:07 is in the snapshot
by then, and the digest of a bar still lacking inputs is past its deadline
(`cg_assets.alerts.assets.INPUTS_DEADLINE`) and goes out naming them. A bar already alerted is
not sent again (the ledger's key is the bar). The daily tick follows `market_daily_finalize`
(00:20), which is what stores yesterday's last bars, so yesterday's snapshot and signals end on
complete inputs. Run keys make a retried tick idempotent.
"""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.signals.engine import ASSET as SIGNALS
from cg_assets.signals.snapshot import ASSET as SNAPSHOT

if TYPE_CHECKING:  # the return type of define_asset_job is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

JOB_NAME = "signals_job"
HOURLY_MINUTE = 7
RECHECK_MINUTE = 37


def build_signals_job() -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(SNAPSHOT, SIGNALS),
        description="Build the market snapshot of the selected days and evaluate the signals.",
    )


def last_closed_bar(moment: datetime, interval_ms: int) -> datetime:
    """Start of the newest bar that has closed at `moment`."""
    ms = int(moment.timestamp() * 1000)
    return datetime.fromtimestamp((ms - ms % interval_ms - interval_ms) / 1000, UTC)


def build_signals_schedules(
    job: "UnresolvedAssetJobDefinition", interval_ms: int
) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="signals_hourly",
        cron_schedule=f"{HOURLY_MINUTE} * * * *",
        job=job,
        execution_timezone="UTC",
        description="Snapshot and signals for the bars closed so far, after the market refresh.",
    )
    def hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        bar = last_closed_bar(context.scheduled_execution_time.astimezone(UTC), interval_ms)
        return dg.RunRequest(
            run_key=f"signals-{bar:%Y-%m-%dT%H:%M}", partition_key=bar.date().isoformat()
        )

    @dg.schedule(
        name="signals_recheck",
        cron_schedule=f"{RECHECK_MINUTE} * * * *",
        job=job,
        execution_timezone="UTC",
        description="Evaluate the newest bar again once a late market refresh has had time to"
        " land; its digest goes out then, complete or naming what is missing.",
    )
    def recheck(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        bar = last_closed_bar(context.scheduled_execution_time.astimezone(UTC), interval_ms)
        return dg.RunRequest(
            run_key=f"signals-recheck-{bar:%Y-%m-%dT%H:%M}", partition_key=bar.date().isoformat()
        )

    @dg.schedule(
        name="signals_daily_finalize",
        cron_schedule="25 0 * * *",
        job=job,
        execution_timezone="UTC",
        description="Re-evaluate yesterday once the market finalize has stored its last bars.",
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date()
        return dg.RunRequest(
            run_key=f"signals-finalize-{day.isoformat()}", partition_key=day.isoformat()
        )

    return [hourly, recheck, daily]
