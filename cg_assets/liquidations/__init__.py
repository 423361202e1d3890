"""Live liquidations: the sidecar's spool becomes `liquidation_orders`, gaps refilled by REST."""

import dagster as dg

from cg_assets.liquidations.assets import ASSET, build_liquidation_assets
from cg_assets.liquidations.sensors import build_liquidation_sensors
from cg_assets.settings import Settings

INGEST_JOB = "liquidation_ingest_job"


def build_liquidation_defs(settings: Settings) -> dg.Definitions:
    job = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.assets(ASSET),
        description="Ingest a batch of spool segments into liquidation_orders.",
    )
    orders, sidecar_fresh = build_liquidation_assets(settings)
    return dg.Definitions(
        assets=[orders],
        asset_checks=[sidecar_fresh],
        jobs=[job],
        sensors=build_liquidation_sensors(settings, job),
    )
