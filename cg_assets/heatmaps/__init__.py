"""Heatmaps: where liquidations happened, which price zones carry pressure, and CoinGlass's
own model heatmap, as lake tables with a picture per materialization."""

import dagster as dg

from cg_assets.heatmaps.composite import build_composite_heatmap
from cg_assets.heatmaps.liquidation import build_liquidation_heatmap
from cg_assets.heatmaps.model import build_model_heatmap
from cg_assets.heatmaps.schedules import build_heatmap_jobs, build_heatmap_schedules
from cg_assets.settings import Settings


def build_heatmap_defs(settings: Settings) -> dg.Definitions:
    liquidation, model = build_heatmap_jobs()
    return dg.Definitions(
        assets=[
            build_liquidation_heatmap(settings),
            build_composite_heatmap(settings),
            build_model_heatmap(settings),
        ],
        jobs=[liquidation, model],
        schedules=build_heatmap_schedules(liquidation, model),
    )
