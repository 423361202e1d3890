"""Keep today's market partition current through the day and finalize yesterday's.

The hourly tick refreshes the running day once a bar has closed (closed bars only, so nothing
partial lands in the record); the daily tick, shortly after midnight UTC, rewrites yesterday
with its last bars. Run keys make a retried tick idempotent.
"""

from datetime import UTC, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.coinglass.plans import DAY_MS

if TYPE_CHECKING:  # the return type of define_asset_job is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

JOB_NAME = "market_job"


def build_market_job() -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.groups("market"),
        description="Fetch every market asset for the selected days from CoinGlass.",
    )


HOURLY_REFRESH_CRON = "5 * * * *"


def build_market_schedules(
    job: "UnresolvedAssetJobDefinition", interval_ms: int
) -> list[dg.ScheduleDefinition]:
    first_bar_closes_min = max(1, interval_ms // 60_000)

    @dg.schedule(
        name="market_hourly_refresh",
        cron_schedule=HOURLY_REFRESH_CRON,
        job=job,
        execution_timezone="UTC",
        description="Refresh today's partition with the bars closed so far.",
    )
    def hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        moment = context.scheduled_execution_time.astimezone(UTC)
        minutes_into_day = moment.hour * 60 + moment.minute
        if interval_ms < DAY_MS and minutes_into_day < first_bar_closes_min:
            return dg.SkipReason(f"no {interval_ms // 60_000}-minute bar of today has closed yet")
        day = moment.date().isoformat()
        return dg.RunRequest(run_key=f"refresh-{day}T{moment.hour:02d}", partition_key=day)

    @dg.schedule(
        name="market_daily_finalize",
        cron_schedule="20 0 * * *",
        job=job,
        execution_timezone="UTC",
        description="Rewrite yesterday's partition with all of its closed bars.",
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date()
        return dg.RunRequest(run_key=f"finalize-{day.isoformat()}", partition_key=day.isoformat())

    return [hourly, daily]
