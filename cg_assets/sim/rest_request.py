"""One CoinGlass V4 REST request as the routes see it: its parameters, checked and parsed the
way the real API checks them, and the error the API reports in the envelope when they are
wrong. The window rules (reference §4) live here because every history endpoint shares them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cg_assets.coinglass.plans import DAY_MS, Plan, history_days, interval_ms
from cg_assets.sim.instruments import Instrument
from cg_assets.sim.liquidations import LiquidationFeed
from cg_assets.sim.market import SyntheticMarket

# Current docs: default and maximum 1000 (older copies said 4500). What the real server does
# above the maximum is undocumented; clamping is the forgiving reading.
MAX_LIMIT = 1000

JsonBody = dict[str, Any]


class ApiError(Exception):
    """An error CoinGlass reports in the body of an HTTP 200 response."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg


def _upgrade_plan() -> ApiError:
    return ApiError("401", "Upgrade plan")


@dataclass(frozen=True)
class _Window:
    interval_ms: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Call:
    """One routed API request: its parameters and the caller's plan, at the server's `now`.

    `feed` returns the server's liquidation feed, created on first use: most requests never
    need one.
    """

    market: SyntheticMarket
    params: dict[str, str]
    plan: Plan
    now: int
    feed: Callable[[], LiquidationFeed]

    def require(self, name: str) -> str:
        value = self.params.get(name, "").strip()
        if not value:
            raise ApiError("400", f"Required String parameter '{name}' is not present")
        return value

    def integer(self, name: str) -> int | None:
        raw = self.params.get(name, "").strip()
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ApiError(
                "400",
                f"Failed to convert value of type 'java.lang.String' to required type 'long'; "
                f'For input string: "{raw}"',
            ) from None

    def window(self) -> _Window:
        """The bars a history request covers, by the range rules of reference §4."""
        interval = self.require("interval")
        try:
            step = interval_ms(interval)
        except ValueError as exc:
            raise ApiError("400", str(exc)) from None
        try:
            days = history_days(self.plan, interval)
        except ValueError:
            # How the real API rejects an interval below the plan's floor is undocumented;
            # "Upgrade plan" is what it says for every other plan restriction.
            raise _upgrade_plan() from None
        limit = self.integer("limit")
        if limit is not None and limit < 1:
            raise ApiError("400", f"limit must be at least 1, got {limit}")
        span = step * min(limit or MAX_LIMIT, MAX_LIMIT)
        start, end = _truncate_s(self.integer("start_time")), _truncate_s(self.integer("end_time"))
        if start is None:
            end = self.now if end is None else end
            start = end - span
        if days is not None:
            start = max(start, self.now - days * DAY_MS)
        start = -(-start // step) * step
        end = min(start + span if end is None else end, self.now)
        return _Window(step, start, min(end, start + span))

    def coin(self) -> str:
        coin = self.require("symbol")
        if coin not in self.market.coins:
            raise ApiError("400", f"symbol '{coin}' is not supported; pass a coin such as BTC")
        return coin

    def exchange_list(self) -> list[str]:
        names = [n.strip() for n in self.require("exchange_list").split(",") if n.strip()]
        for name in names:
            self.check_exchange(name)
        return names

    def check_exchange(self, name: str) -> None:
        if name not in self.market.exchanges:
            raise ApiError("400", f"exchange '{name}' is not supported")

    def instrument(self) -> Instrument:
        exchange = self.require("exchange")
        symbol = self.require("symbol")
        self.check_exchange(exchange)
        try:
            return self.market.instrument(exchange, symbol)
        except KeyError:
            raise ApiError(
                "400", f"symbol '{symbol}' is not listed on exchange '{exchange}'"
            ) from None

    def amount(self, name: str) -> float:
        raw = self.require(name)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not value >= 0 or math.isinf(value):
            raise ApiError("400", f"{name} must be a non-negative USD amount, got '{raw}'")
        return value

    def unit(self) -> Literal["usd", "coin"]:
        unit = self.params.get("unit", "usd").strip().lower() or "usd"
        if unit not in ("usd", "coin"):
            raise ApiError("400", f"unit must be 'usd' or 'coin', got '{unit}'")
        return "usd" if unit == "usd" else "coin"


def _truncate_s(ms: int | None) -> int | None:
    return None if ms is None else ms - ms % 1000
