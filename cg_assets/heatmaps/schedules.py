"""Keep today's heatmaps current and refresh CoinGlass's model heatmap every hour.

The liquidation and composite heatmaps are rebuilt for today every 10 minutes: often enough
that the hourly signal evaluation (HH:07) finds zones no more than 10 minutes old, rare enough
that a laptop does not spend its time starting runs. The model heatmap is a snapshot of "now"
from the API; hourly keeps a Professional plan's request budget for the market assets.
"""

from datetime import UTC
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.heatmaps.composite import ASSET as COMPOSITE
from cg_assets.heatmaps.liquidation import ASSET as LIQUIDATION
from cg_assets.heatmaps.model import ASSET as MODEL

if TYPE_CHECKING:  # the return type of define_asset_job is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

HEATMAPS_JOB = "heatmaps_job"
MODEL_JOB = "model_heatmap_job"


def build_heatmap_jobs() -> tuple["UnresolvedAssetJobDefinition", "UnresolvedAssetJobDefinition"]:
    return (
        dg.define_asset_job(
            HEATMAPS_JOB,
            selection=dg.AssetSelection.assets(LIQUIDATION, COMPOSITE),
            description="Rebuild the liquidation and composite heatmaps of the selected days.",
        ),
        dg.define_asset_job(
            MODEL_JOB,
            selection=dg.AssetSelection.assets(MODEL),
            description="Fetch CoinGlass's model heatmap (Professional plan and up).",
        ),
    )


def build_heatmap_schedules(
    heatmaps: "UnresolvedAssetJobDefinition", model: "UnresolvedAssetJobDefinition"
) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="heatmaps_refresh",
        cron_schedule="*/10 * * * *",
        job=heatmaps,
        execution_timezone="UTC",
        description="Today's liquidation and composite heatmaps, every 10 minutes.",
    )
    def refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        moment = context.scheduled_execution_time.astimezone(UTC)
        return dg.RunRequest(
            run_key=f"heatmaps-{moment:%Y-%m-%dT%H:%M}", partition_key=moment.date().isoformat()
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
