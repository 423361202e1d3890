"""Adaptive thresholds: each coin's own recent history raises the fixed floors.

A funding rate of 0.07% per 8 h is rare for BTC and routine for a small coin in a mania. So,
per metric and coin, the rolling p85 / p95 / p99 of the trailing window (default 30 days, the
evaluated bar itself excluded) become the LOW / MEDIUM / HIGH cuts, but never below the fixed
thresholds: a level's floor is the lowest fixed threshold that already gives that level or a
higher one, and a level no fixed threshold reaches stays out of reach. With fewer samples than
the configured minimum, the fixed thresholds apply alone and the evidence says why.

The quantiles are computed by DuckDB over the snapshot history (a window aggregate over the
long table of metric values); the mapping to cuts is plain Python, shared with the heads-up
flow, so this module imports neither Dagster nor DuckDB at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

ORDER = ("LOW", "MEDIUM", "HIGH")
LEVEL_QUANTILES = {"LOW": 0.85, "MEDIUM": 0.95, "HIGH": 0.99}


@dataclass(frozen=True)
class Percentiles:
    """A metric's rolling percentiles for one coin at one bar, and how many values they rest on."""

    p85: float
    p95: float
    p99: float
    samples: int

    def at(self, level: str) -> float:
        return {"LOW": self.p85, "MEDIUM": self.p95, "HIGH": self.p99}[level]


NO_SAMPLES = Percentiles(math.nan, math.nan, math.nan, 0)


def level_floors(fixed: Mapping[str, float]) -> dict[str, float]:
    """Per level, the lowest fixed threshold giving that level or a higher one (inf if none)."""
    return {
        level: min(
            (v for lv, v in fixed.items() if ORDER.index(lv) >= ORDER.index(level)),
            default=math.inf,
        )
        for level in ORDER
    }


def level_cuts(
    fixed: Mapping[str, float],
    pct: Percentiles | None,
    min_samples: int,
    window_days: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The cut per level and the evidence of where it came from.

    `pct` None means adaptive thresholds are off; a Percentiles with too few samples falls back
    to the floors.
    """
    floors = level_floors(fixed)
    if pct is None:
        return floors, {"basis": "fixed thresholds (adaptive off)"}
    if pct.samples < min_samples:
        return floors, {
            "basis": (
                f"fixed thresholds: {pct.samples} sample(s) in the last {window_days} d,"
                f" adaptive needs {min_samples}"
            )
        }
    cuts = {level: max(floors[level], pct.at(level)) for level in ORDER}
    return cuts, {
        "basis": f"adaptive: p85/p95/p99 over {window_days} d, floored at the fixed thresholds",
        "percentiles": {
            "p85": pct.p85,
            "p95": pct.p95,
            "p99": pct.p99,
            "samples": pct.samples,
        },
    }


# Each value against the same coin's values of the same metric over the trailing window; the
# bar itself is excluded, so a spike is judged against the history before it.
ROLLING_SQL = """
SELECT ts, symbol, metric,
       quantile_cont(value, $quantiles) OVER past AS q,
       count(value) OVER past AS samples
FROM metric_values
WINDOW past AS (
    PARTITION BY symbol, metric
    ORDER BY ts
    RANGE BETWEEN $window PRECEDING AND $just_before PRECEDING
)
QUALIFY ts >= $first_ts
"""


def rolling_percentiles(
    con: duckdb.DuckDBPyConnection,
    values: pa.Table,
    window: timedelta,
    first_ts: datetime,
) -> dict[tuple[datetime, str], dict[str, Percentiles]]:
    """(ts, symbol) -> metric -> Percentiles for every value at or after `first_ts`.

    `values` is the long table (ts, symbol, metric, value) of the snapshot history, starting
    `window` before `first_ts` so the first evaluated bars see a full window.
    """
    con.register("metric_values", values)
    try:
        rows = con.execute(
            ROLLING_SQL,
            {
                "quantiles": [LEVEL_QUANTILES[lv] for lv in ORDER],
                "window": window,
                "just_before": timedelta(milliseconds=1),
                "first_ts": first_ts,
            },
        ).fetchall()
    finally:
        con.unregister("metric_values")
    result: dict[tuple[datetime, str], dict[str, Percentiles]] = {}
    for ts, symbol, metric, q, samples in rows:
        pct = Percentiles(*q, samples=samples) if samples else NO_SAMPLES
        result.setdefault((ts, symbol), {})[metric] = pct
    return result
