"""The alerts domain's Definitions: the digest, the heads-up flow, ops alerts, the heartbeat.

The digest (`telegram_alerts`, with its all clears) follows `signals` by its automation
condition; the heads-up flow has its own sensor, since it reacts to spool events within
seconds, not to assets; the heartbeat, when CG_HEARTBEAT_AT is set, has a daily schedule.
"""

import os

import dagster as dg

from cg_assets.alerts import headsup
from cg_assets.alerts.assets import build_alert_assets
from cg_assets.alerts.heartbeat import build_heartbeat_defs
from cg_assets.alerts.ops import build_ops_sensors
from cg_assets.settings import Settings


def build_alert_defs(settings: Settings) -> dg.Definitions:
    headsup_job = dg.define_asset_job(
        headsup.JOB,
        selection=dg.AssetSelection.assets(headsup.ASSET),
        description="Heads-up and verdict for one liquidation burst (launched by the sensor).",
    )
    alerts = dg.Definitions(
        assets=[build_alert_assets(settings), headsup.build_headsup_asset(settings)],
        jobs=[headsup_job],
        sensors=[
            headsup.build_headsup_sensor(
                settings, headsup_job, headsup.thresholds_from_env(os.environ)
            ),
            *build_ops_sensors(settings),
        ],
    )
    return dg.Definitions.merge(alerts, build_heartbeat_defs(settings))
