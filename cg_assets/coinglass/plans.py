"""CoinGlass V4 plan facts: rate limits, interval floors, history depth, endpoint gating.

One table shared by settings validation, the client's rate limiter and the simulator, so the
three can never disagree about what a plan allows. Figures come from reference §3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# The interval vocabulary of the history endpoints (reference §4). `2h` is in the intervals
# guide but missing from most endpoint pages, so it is accepted here and left to the server.
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "1w": 7 * DAY_MS,
}

_INTERVAL_RE = re.compile(r"^(\d+)([mhdw])$")


class Plan(StrEnum):
    HOBBYIST = "hobbyist"
    STARTUP = "startup"
    STANDARD = "standard"
    PROFESSIONAL = "professional"
    ENTERPRISE = "enterprise"

    @property
    def rank(self) -> int:
        return list(Plan).index(self)

    @property
    def label(self) -> str:
        return self.value.capitalize()

    @property
    def has_websocket(self) -> bool:
        """Whether the plan streams liquidations over WebSocket (reference §6)."""
        return self.rank >= WEBSOCKET_PLAN.rank


@dataclass(frozen=True)
class PlanLimits:
    requests_per_minute: int
    min_interval_ms: int
    # interval -> days of history; None means all history, a missing key means not allowed.
    history_days: dict[str, int | None]


def _depth(
    minute: int | None, m3: int | None, m5: int | None, m15: int | None, m30: int | None,
    hour: int | None, h4: int | None, h6: int | None,
) -> dict[str, int | None]:  # fmt: skip
    """Expand one row of the reference's depth table; a None argument means "not allowed"."""
    row = {
        "1m": minute, "3m": m3, "5m": m5, "15m": m15, "30m": m30,
        "1h": hour, "2h": hour, "4h": h4, "6h": h6, "8h": h6, "12h": h6,
    }  # fmt: skip
    allowed: dict[str, int | None] = {k: v for k, v in row.items() if v is not None}
    allowed["1d"] = None
    allowed["1w"] = None
    return allowed


# Enterprise: the rate is not officially published (one third-party table says 6000/min) and
# its history depth is custom. Both are overridable through settings (CG_RATE_LIMIT_PER_MIN);
# the depth below assumes Professional's as a conservative default.
PLAN_LIMITS: dict[Plan, PlanLimits] = {
    Plan.HOBBYIST: PlanLimits(
        30, 4 * HOUR_MS, _depth(None, None, None, None, None, None, 180, 360)
    ),
    Plan.STARTUP: PlanLimits(80, 30 * MINUTE_MS, _depth(None, None, None, None, 90, 180, 180, 360)),
    Plan.STANDARD: PlanLimits(300, MINUTE_MS, _depth(6, 20, 30, 90, 180, 360, 360, 360)),
    Plan.PROFESSIONAL: PlanLimits(1200, MINUTE_MS, _depth(12, 40, 60, 180, 360, 720, 720, 720)),
    Plan.ENTERPRISE: PlanLimits(6000, MINUTE_MS, _depth(12, 40, 60, 180, 360, 720, 720, 720)),
}

# The lowest plan with the `liquidationOrders` WebSocket channel (and the REST order history
# that refills its gaps): below it there is no sidecar to run or to watch.
WEBSOCKET_PLAN = Plan.STANDARD

# Endpoint gating (reference §3): path prefix -> lowest plan that may call it.
PLAN_GATED_PATHS: dict[str, Plan] = {
    "/api/futures/liquidation/coin-list": Plan.STARTUP,
    "/api/futures/liquidation/order": Plan.STANDARD,
    "/api/futures/liquidation/heatmap/": Plan.PROFESSIONAL,
    "/api/futures/liquidation/aggregated-heatmap/": Plan.PROFESSIONAL,
    "/api/futures/liquidation/map": Plan.PROFESSIONAL,
    "/api/futures/liquidation/aggregated-map": Plan.PROFESSIONAL,
    "/api/futures/liquidation/max-pain": Plan.PROFESSIONAL,
}


def parse_plan(value: str) -> Plan:
    """Parse a plan name case-insensitively; ValueError lists the allowed names."""
    try:
        return Plan(value.strip().lower())
    except ValueError:
        allowed = ", ".join(p.value for p in Plan)
        raise ValueError(f"unknown plan {value!r}; allowed: {allowed}") from None


def interval_ms(interval: str) -> int:
    """Milliseconds in one bar of `interval`; ValueError names the value and the vocabulary."""
    if interval not in INTERVAL_MS:
        hint = ""
        legacy = re.match(r"^([mhdw])(\d+)$", interval)
        if legacy:
            hint = f" (V3-style; write {legacy.group(2)}{legacy.group(1)})"
        elif _INTERVAL_RE.match(interval):
            hint = " (not an interval CoinGlass serves)"
        allowed = ", ".join(INTERVAL_MS)
        raise ValueError(f"bad interval {interval!r}{hint}; allowed: {allowed}")
    return INTERVAL_MS[interval]


def min_plan_for_path(path: str) -> Plan:
    """The lowest plan allowed to call `path` (Hobbyist when the path is not gated)."""
    for prefix, plan in PLAN_GATED_PATHS.items():
        if path.startswith(prefix):
            return plan
    return Plan.HOBBYIST


def lowest_plan_for_interval(interval: str) -> Plan:
    """The lowest plan whose interval floor admits `interval` (for "upgrade plan" messages)."""
    ms = interval_ms(interval)
    for plan in Plan:
        if ms >= PLAN_LIMITS[plan].min_interval_ms:
            return plan
    return Plan.ENTERPRISE


def history_days(plan: Plan, interval: str) -> int | None:
    """Days of history `plan` serves at `interval`; None for all history.

    Raises ValueError when the plan does not serve the interval at all.
    """
    limits = PLAN_LIMITS[plan]
    if interval not in limits.history_days:
        raise ValueError(
            f"the {plan.label} plan does not serve interval {interval!r}; "
            f"the lowest plan that does is {lowest_plan_for_interval(interval).label}"
        )
    return limits.history_days[interval]
