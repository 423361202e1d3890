"""The heatmaps' roots: the liquidation heatmap every 10 minutes, CoinGlass's model hourly.

`liquidation_heatmap` is a root on a clock although it is computed from `liquidation_orders`:
the spool sensor materializes the orders every few seconds while the market moves, and a
heatmap (with `composite_heatmap` after it) rebuilt after each batch would keep a laptop busy
starting runs. Every 10 minutes is often enough for the signals (they use the composite window
that ended by a bar's close). The tick at 00:00 rebuilds the day that just ended, so its last
10 minutes reach the lake; `composite_heatmap` follows each rebuild by its automation condition.
The model heatmap is a snapshot of "now" from the API; hourly keeps a Professional plan's
request budget for the market assets.
"""

from datetime import UTC, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.heatmaps.liquidation import ASSET as LIQUIDATION
from cg_assets.heatmaps.model import ASSET as MODEL

if TYPE_CHECKING:  # the return type of define_asset_job is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

LIQUIDATION_JOB = "liquidation_heatmap_job"
MODEL_JOB = "model_heatmap_job"
REFRESH_MINUTES = 10


def build_heatmap_jobs() -> tuple["UnresolvedAssetJobDefinition", "UnresolvedAssetJobDefinition"]:
    return (
        dg.define_asset_job(
            LIQUIDATION_JOB,
            selection=dg.AssetSelection.assets(LIQUIDATION),
            description="Rebuild the liquidation heatmap of the selected days.",
        ),
        dg.define_asset_job(
            MODEL_JOB,
            selection=dg.AssetSelection.assets(MODEL),
            description="Fetch CoinGlass's model heatmap (Professional plan and up).",
        ),
    )


def build_heatmap_schedules(
    liquidation: "UnresolvedAssetJobDefinition", model: "UnresolvedAssetJobDefinition"
) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="liquidation_heatmap_refresh",
        cron_schedule=f"*/{REFRESH_MINUTES} * * * *",
        job=liquidation,
        execution_timezone="UTC",
        description="Rebuild the liquidation heatmap of the day holding the last 10 minutes.",
    )
    def refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        moment = context.scheduled_execution_time.astimezone(UTC)
        day = (moment - timedelta(minutes=REFRESH_MINUTES)).date()
        return dg.RunRequest(
            run_key=f"liquidation-heatmap-{moment:%Y-%m-%dT%H:%M}", partition_key=day.isoformat()
        )

    return [
        refresh,
        dg.ScheduleDefinition(
            name="model_heatmap_hourly",
            cron_schedule="10 * * * *",
            job=model,
            execution_timezone="UTC",
            description="CoinGlass's model heatmap, hourly (skipped below Professional).",
        ),
    ]
