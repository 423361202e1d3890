"""Live liquidations: the sidecar's spool becomes `liquidation_orders`, gaps refilled by REST."""

import time
from collections.abc import Callable

import dagster as dg

from cg_assets.liquidations.assets import ASSET, SIDECAR_CHECK, build_liquidation_assets
from cg_assets.liquidations.sensors import build_liquidation_sensors
from cg_assets.settings import Settings

INGEST_JOB = "liquidation_ingest_job"


def ingest_job_tags(settings: Settings) -> dict[str, str]:
    return {
        # The spool sensor retries failed batches itself (see its module).
        "dagster/max_retries": "0",
        # A batch is bounded (INGEST_MAX_EVENTS), so a run still going after this long is
        # stuck (or its worker is gone and DefaultRunLauncher cannot tell, once the code
        # server that launched it is gone too): run monitoring fails it, and the spool
        # sensor, which waits while an ingestion is in flight, retries.
        "dagster/max_runtime": str(settings.ingest_max_runtime_s),
    }


def build_liquidation_defs(
    settings: Settings, clock: Callable[[], float] = time.time
) -> dg.Definitions:
    selection = dg.AssetSelection.assets(ASSET)
    if settings.sidecar_expected:
        # The sidecar's health is the health sensor's to report, on a change, not every
        # ingestion run's: a minute-by-minute run would only add events to Dagster's storage.
        selection -= dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey(ASSET), SIDECAR_CHECK))
    job = dg.define_asset_job(
        INGEST_JOB,
        selection=selection,
        description="Ingest a batch of spool segments into liquidation_orders.",
        tags=ingest_job_tags(settings),
    )
    orders, checks = build_liquidation_assets(settings)
    return dg.Definitions(
        assets=[orders],
        asset_checks=checks,
        jobs=[job],
        sensors=build_liquidation_sensors(settings, job, clock),
    )
