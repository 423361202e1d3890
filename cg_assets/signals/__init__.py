"""Signals: the hourly market snapshot per coin and the rule engine over it.

`rules` (pure: the rule functions, Snapshot, Signal, Thresholds) and `percentiles` (adaptive
thresholds) import no Dagster, so the liquidation heads-up flow reuses them on REST values.
They follow their inputs by declarative automation (`cg_assets.automation`): no schedule of
their own. `outcomes` and `scorecard` backtest every rule against its stated hypothesis
(`rules.HYPOTHESES`), with the maths in `backtest` (no Dagster).
"""

import dagster as dg

from cg_assets.settings import Settings
from cg_assets.signals.engine import build_signals_asset
from cg_assets.signals.outcomes import build_outcomes_asset
from cg_assets.signals.scorecard import build_scorecard_asset
from cg_assets.signals.snapshot import build_snapshot_asset


def build_signal_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            build_snapshot_asset(settings),
            build_signals_asset(settings),
            build_outcomes_asset(settings),
            build_scorecard_asset(settings),
        ]
    )
