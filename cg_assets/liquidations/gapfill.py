"""Refill the windows the WebSocket missed from CoinGlass's REST liquidation-order history.

The sidecar records a gap whenever it had no subscription (a dropped connection, a restart).
The REST endpoint serves the past 7 days, at most 200 orders per call, on Standard and higher
plans. Its ordering within a window is undocumented (the simulator answers newest first), so
paging follows whichever direction a full page shows and re-asks the boundary millisecond;
the merge drops the resulting duplicates by event_id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cg_assets.coinglass.plans import DAY_MS

ORDER_PATH = "/api/futures/liquidation/order"
ORDER_PAGE = 200
REST_HISTORY_MS = 7 * DAY_MS

log = logging.getLogger(__name__)

Get = Callable[[str, Mapping[str, Any]], Any]


@dataclass
class GapReport:
    start: int
    end: int
    status: str  # filled, partial, unfillable
    rows: int = 0
    reason: str = ""


def fillable(start: int, end: int, now_ms: int) -> tuple[int, int] | None:
    """The part of (start, end) that the REST history still covers, or None."""
    start = max(start, now_ms - REST_HISTORY_MS)
    return (start, end) if start < end else None


def fetch_orders(
    get: Get, exchange: str, coin: str, start_ms: int, end_ms: int, min_usd: float
) -> list[dict]:
    """Every order in [start_ms, end_ms] for one exchange and coin, paging 200 at a time."""
    rows: list[dict] = []
    lo, hi = start_ms, end_ms
    while True:
        params = {
            "exchange": exchange,
            "symbol": coin,
            "min_liquidation_amount": f"{min_usd:g}",
            "start_time": lo,
            "end_time": hi,
        }
        page = list(get(ORDER_PATH, params))
        rows.extend(page)
        if len(page) < ORDER_PAGE:
            return rows
        times = [int(r["time"]) for r in page]
        # Re-ask the boundary millisecond (duplicates merge away); if that makes no progress
        # the whole page sat on it, so step past it and say so.
        if times[0] >= times[-1]:  # newest first: move the end back
            nxt = min(times) + 1
            if nxt >= hi:
                nxt = min(times) - 1
                _warn_crowded(exchange, coin, min(times))
            hi = nxt
        else:  # oldest first: move the start forward
            nxt = max(times)
            if nxt <= lo:
                nxt = max(times) + 1
                _warn_crowded(exchange, coin, max(times))
            lo = nxt
        if lo >= hi:
            return rows


def _warn_crowded(exchange: str, coin: str, ms: int) -> None:
    log.warning(
        "%s %s: over %d orders at %d ms; some may be missed", exchange, coin, ORDER_PAGE, ms
    )
