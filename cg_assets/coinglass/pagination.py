"""Time-window pagination for the history endpoints, which have no cursor (reference §4).

The server serves at most `limit` bars per request, includes `start_time`, excludes
`end_time` and pushes an unaligned start to the next bar boundary. Windows of exactly
`interval x limit` ms therefore hold at most `limit` bars whatever the server's bar alignment,
and adjacent windows neither overlap nor leave gaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def windows(
    start_ms: int, end_ms: int, interval_ms: int, limit: int = 1000
) -> list[tuple[int, int]]:
    """Consecutive [start, end) windows covering the bars of [start_ms, end_ms).

    The first window starts at the first bar boundary >= start_ms, so a range that holds
    exactly `limit` bars costs one request, not two.
    """
    if interval_ms <= 0 or limit <= 0:
        raise ValueError(f"need interval_ms > 0 and limit > 0, got {interval_ms}, {limit}")
    span = interval_ms * limit
    first = -(-start_ms // interval_ms) * interval_ms
    return [(lo, min(lo + span, end_ms)) for lo in range(first, end_ms, span)]


def merge_bars(
    pages: Iterable[Iterable[Mapping[str, Any]]], start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    """The bars of [start_ms, end_ms) from all pages, one per `time`, in ascending order.

    A later page wins on a duplicate `time`: pages are fetched in time order, so the later
    copy is the fresher one (the last bar of a page can still be forming).
    """
    by_time: dict[int, dict[str, Any]] = {}
    for page in pages:
        for row in page:
            t = int(row["time"])
            if start_ms <= t < end_ms:
                by_time[t] = dict(row)
    return [by_time[t] for t in sorted(by_time)]
