"""Market data: funding, open interest, taker flow, long/short ratios, liquidations, price."""

import dagster as dg

from cg_assets.market.assets import build_market_assets
from cg_assets.market.schedules import build_market_job, build_market_schedules
from cg_assets.settings import Settings


def build_market_defs(settings: Settings) -> dg.Definitions:
    job = build_market_job()
    return dg.Definitions(
        assets=[build_market_assets(settings)],
        jobs=[job],
        schedules=build_market_schedules(job, settings.interval_ms),
    )
