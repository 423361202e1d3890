from datetime import UTC, date, datetime, timedelta

import pytest

from cg_assets.coinglass.plans import HOUR_MS, Plan
from cg_assets.partitions import (
    HistoryDepthError,
    check_history_depth,
    closed_bars_end,
    days_between,
    to_ms,
)

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def test_days_between_is_end_exclusive():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert days_between(start, start + timedelta(days=3)) == [
        date(2026, 1, 1),
        date(2026, 1, 2),
        date(2026, 1, 3),
    ]
    assert days_between(start, start) == []


def test_closed_bars_end_stops_at_the_last_closed_bar():
    day_end = to_ms(datetime(2026, 11, 23, tzinfo=UTC))
    assert closed_bars_end(day_end, to_ms(NOW), HOUR_MS) == to_ms(
        datetime(2026, 11, 22, 10, tzinfo=UTC)
    )
    past_end = to_ms(datetime(2026, 11, 20, tzinfo=UTC))
    assert closed_bars_end(past_end, to_ms(NOW), HOUR_MS) == past_end


def test_partition_inside_history_depth_passes():
    check_history_depth(Plan.STANDARD, "1h", NOW - timedelta(days=359), NOW)
    check_history_depth(Plan.HOBBYIST, "1d", datetime(2015, 1, 1, tzinfo=UTC), NOW)


def test_partition_older_than_depth_fails_and_says_so():
    start = datetime(2025, 11, 1, tzinfo=UTC)
    with pytest.raises(HistoryDepthError) as info:
        check_history_depth(Plan.STANDARD, "1h", start, NOW)
    msg = str(info.value)
    assert "partition 2025-11-01" in msg
    assert "Standard plan's 360-day history at interval 1h" in msg
    assert "earliest full day now: 2025-11-28" in msg
    assert "silently clamp" in msg
