"""A rule's backtest record in one line, quoted under each signal of an alert.

Reads a row of the newest `signal_scorecard` (see `cg_assets.signals.scorecard`) for the
signal's rule, level, coin and predicted side at the quoted horizon; no Dagster, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cg_assets.signals.backtest import MIN_EVENTS

QUOTED_HORIZON = "4h"
_OUTCOME = {
    "down": "price was lower",
    "up": "price was higher",
    "none": "price moved more than usual",
}


def record_line(rule: str, level: str, coin: str, row: Mapping[str, Any] | None) -> str:
    """E.g. "funding HIGH, BTC: 4 h later price was lower 61 % of 112 times (baseline 49 %,
    q 0.03)", or "... not enough history yet (n = 7)" while the cell has no test."""
    head = f"{rule} {level}, {coin}:"
    n = int(row["n"]) if row and row.get("n") is not None else 0
    q = row.get("q_value") if row else None
    if row is None or q is None or n < MIN_EVENTS:
        return f"{head} not enough history yet (n = {n})"
    hours = str(row["horizon"]).removesuffix("h")
    outcome = _OUTCOME.get(str(row["side"]), "price moved")
    return (
        f"{head} {hours} h later {outcome} {_percent(row['hit_rate'])} of {n} times"
        f" (baseline {_percent(row['baseline_hit_rate'])}, q {_q(float(q))})"
    )


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value) * 100:.0f} %"


def _q(q: float) -> str:
    return "< 0.01" if q < 0.01 else f"{q:.2f}"
