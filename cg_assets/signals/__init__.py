"""Signals: the hourly market snapshot per coin and the rule engine over it.

`rules` (pure: the rule functions, Snapshot, Signal, Thresholds) and `percentiles` (adaptive
thresholds) import no Dagster, so the liquidation heads-up flow reuses them on REST values.
"""

import dagster as dg

from cg_assets.settings import Settings
from cg_assets.signals.engine import build_signals_asset
from cg_assets.signals.schedules import build_signals_job, build_signals_schedules
from cg_assets.signals.snapshot import build_snapshot_asset


def build_signal_defs(settings: Settings) -> dg.Definitions:
    job = build_signals_job()
    return dg.Definitions(
        assets=[build_snapshot_asset(settings), build_signals_asset(settings)],
        jobs=[job],
        schedules=build_signals_schedules(job, settings.interval_ms),
    )
