"""The code location: each domain's Definitions merged with the shared resources and the
sensor that runs every asset's automation condition.

Settings are read from the environment here, at load time, so a bad value stops the load with
a message naming the variable instead of failing runs later.
"""

from __future__ import annotations

import os

import dagster as dg

from cg_assets.alerts import build_alert_defs
from cg_assets.automation import build_automation_sensor
from cg_assets.heatmaps import build_heatmap_defs
from cg_assets.liquidations import build_liquidation_defs
from cg_assets.market import build_market_defs
from cg_assets.resources import CoinGlassResource, LakeResource, build_telegram_resource
from cg_assets.settings import Settings
from cg_assets.signals import build_signal_defs
from cg_assets.state_location import STATE_DSN_SETTING


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    # Presence is checked now, the value is resolved by Dagster at launch and never shown.
    api_key = dg.EnvVar("CG_API_KEY") if os.environ.get("CG_API_KEY") else None
    return {
        "coinglass": CoinGlassResource(
            base_url=settings.api_base_url,
            api_key=api_key,
            plan=settings.plan.value,
            rate_limit_per_min=settings.rate_limit_per_min,
            schedule_location=dg.EnvVar(STATE_DSN_SETTING)
            if os.environ.get(STATE_DSN_SETTING, "").strip()
            else str(settings.data_dir / "rate_schedule.sqlite"),
        ),
        "lake": LakeResource.at(
            settings.data_dir,
            lake_url=settings.lake_url,
            # Locks of an object-store lake (cg_assets.storage.locks); never shown.
            state_dsn=dg.EnvVar(STATE_DSN_SETTING)
            if os.environ.get(STATE_DSN_SETTING, "").strip()
            else None,
        ),
        # Shared by the alerts domain and the liquidations domain's sidecar health sensor.
        "telegram": build_telegram_resource(settings),
    }


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        build_market_defs(settings),
        build_liquidation_defs(settings),
        build_heatmap_defs(settings),
        build_signal_defs(settings),
        build_alert_defs(settings),
        dg.Definitions(
            resources=build_resources(settings),
            sensors=[build_automation_sensor()],
            executor=dg.in_process_executor,
        ),
    )


defs = build_defs(Settings.from_env())
