"""Daily UTC partitions and the time arithmetic around them.

A partition is a UTC day holding every configured symbol and exchange. Keys never shift
because the start date is a fixed setting, and today is a valid key (end_offset=1) so the
hourly refresh can keep the running day current.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from cg_assets.coinglass.plans import DAY_MS, Plan, history_days


def daily_partitions(start: date) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC", end_offset=1)


def lookback(days: int) -> dg.TimeWindowPartitionMapping:
    """The partition mapping of an input read from `days` days before a partition through it.

    Declaring what a partition reads keeps staleness, backfill ordering and automation true.
    Before the start date Dagster clamps the window to the first partition (every asset shares
    `daily_partitions`), which is what the code does too: it reads the days that exist.
    """
    return dg.TimeWindowPartitionMapping(start_offset=-days)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def day_end_ms(day: date) -> int:
    return to_ms(datetime.combine(day, datetime.min.time(), UTC)) + DAY_MS


def days_between(start: datetime, end: datetime) -> list[date]:
    """UTC days covered by [start, end)."""
    first = start.astimezone(UTC).date()
    count = max(0, -(-(to_ms(end) - to_ms(start)) // DAY_MS))
    return [first + timedelta(days=i) for i in range(count)]


def closed_bars_end(end_ms: int, now_ms: int, interval_ms: int) -> int:
    """End of the request window: never past the last closed bar, so the record holds only
    finished bars and a refresh of today replaces nothing with a partial value."""
    return min(end_ms, now_ms - now_ms % interval_ms)


class HistoryDepthError(ValueError):
    """The plan cannot serve a partition this old at this interval.

    CoinGlass would silently move the start forward, leaving the partition short of bars that
    look complete, so the run fails instead and says what to change.
    """


def check_history_depth(plan: Plan, interval: str, start: datetime, now: datetime) -> None:
    days = history_days(plan, interval)
    if days is None:
        return
    earliest = (now - timedelta(days=days)).astimezone(UTC)
    if start < earliest:
        first_ok = (earliest + timedelta(days=1)).date() if earliest.time() else earliest.date()
        raise HistoryDepthError(
            f"partition {start.date().isoformat()} is older than the {plan.label} plan's"
            f" {days}-day history at interval {interval} (earliest full day now:"
            f" {first_ok.isoformat()}); CoinGlass would silently clamp the start. Backfill from"
            " that day on, use a coarser CG_INTERVAL (1d serves all history) or a higher CG_PLAN."
        )
