"""The alerts domain's Definitions: the digest, the heads-up flow, ops alerts."""

import os

import dagster as dg

from cg_assets.alerts import headsup
from cg_assets.alerts.assets import ASSET, SIGNALS, build_alert_assets
from cg_assets.alerts.ops import build_ops_sensors
from cg_assets.settings import Settings

DIGEST_JOB = "telegram_alerts_job"


def build_alert_defs(settings: Settings) -> dg.Definitions:
    digest_job = dg.define_asset_job(
        DIGEST_JOB,
        selection=dg.AssetSelection.assets(ASSET),
        description="Send the newest signals as one Telegram digest per coin.",
    )
    headsup_job = dg.define_asset_job(
        headsup.JOB,
        selection=dg.AssetSelection.assets(headsup.ASSET),
        description="Heads-up and verdict for one liquidation burst (launched by the sensor).",
    )

    @dg.asset_sensor(
        asset_key=dg.AssetKey(SIGNALS),
        job=digest_job,
        name="alerts_after_signals_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Sends the digest whenever signals are materialized (scheduled or backfilled).",
    )
    def alerts_after_signals(
        context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
    ) -> dg.RunRequest:
        # One digest per signals materialization, however often the sensor is re-evaluated.
        return dg.RunRequest(run_key=f"signals-{asset_event.run_id}-{asset_event.timestamp}")

    return dg.Definitions(
        assets=[build_alert_assets(settings), headsup.build_headsup_asset(settings)],
        jobs=[digest_job, headsup_job],
        sensors=[
            alerts_after_signals,
            headsup.build_headsup_sensor(
                settings, headsup_job, headsup.thresholds_from_env(os.environ)
            ),
            *build_ops_sensors(settings),
        ],
    )
