"""History range rules (reference §4): defaults, boundaries, clamping and limits."""

from __future__ import annotations

import pytest

from cg_assets.coinglass.plans import DAY_MS, MINUTE_MS, Plan, history_days
from cg_assets_tests.test_sim.conftest import EPOCH_MS, HOUR, NOW_MS

PRICE = "/api/futures/price/history"
PAIR = {"exchange": "Binance", "symbol": "BTCUSDT"}
NOW_BAR = NOW_MS - NOW_MS % HOUR
T0 = NOW_BAR - 10 * DAY_MS  # an hour boundary well inside the listing history


def times(api, **params) -> list[int]:
    return [bar["time"] for bar in api.data(PRICE, **PAIR, **params)]


def hours(first: int, count: int, step: int = HOUR) -> list[int]:
    return [first + i * step for i in range(count)]


def test_no_range_means_limit_bars_ending_with_the_current_one(api):
    assert times(api, interval="1h", limit=10) == hours(NOW_BAR - 9 * HOUR, 10)


def test_default_limit_is_1000(api):
    got = times(api, interval="1h")
    assert len(got) == 1000
    assert got[-1] == NOW_BAR


def test_start_off_a_boundary_is_pushed_to_the_next_one(api):
    got = times(api, interval="4h", start_time=T0 - T0 % (4 * HOUR) + 1_000, limit=3)
    assert got == hours(T0 - T0 % (4 * HOUR) + 4 * HOUR, 3, 4 * HOUR)


def test_sub_second_part_of_start_is_truncated_not_pushed(api):
    minute = NOW_MS - NOW_MS % MINUTE_MS - 30 * MINUTE_MS
    assert times(api, interval="1m", start_time=minute + 500, limit=2) == [
        minute,
        minute + MINUTE_MS,
    ]


def test_start_is_included_and_end_excluded(api):
    assert times(api, interval="1h", start_time=T0, end_time=T0 + 5 * HOUR) == hours(T0, 5)


def test_only_start_spans_interval_times_limit(api):
    assert times(api, interval="1h", start_time=T0, limit=7) == hours(T0, 7)


def test_only_end_spans_interval_times_limit_back(api):
    assert times(api, interval="1h", end_time=T0, limit=3) == hours(T0 - 3 * HOUR, 3)


def test_end_in_the_future_is_now(api):
    got = times(api, interval="1h", start_time=NOW_BAR - 3 * HOUR, end_time=NOW_MS + 10 * DAY_MS)
    assert got == hours(NOW_BAR - 3 * HOUR, 4)


def test_a_window_longer_than_limit_returns_its_first_bars(api):
    assert times(api, interval="1h", start_time=T0, end_time=T0 + 50 * HOUR, limit=10) == hours(
        T0, 10
    )


def test_limit_above_1000_is_clamped(api):
    got = times(api, interval="1h", start_time=EPOCH_MS, end_time=NOW_MS, limit=5000)
    assert got == hours(EPOCH_MS, 1000)


def test_there_are_no_bars_before_the_listing(api):
    got = times(api, interval="1d", start_time=EPOCH_MS - 10 * DAY_MS, limit=12)
    assert got == hours(EPOCH_MS, 2, DAY_MS)


@pytest.mark.parametrize("plan", [Plan.STANDARD, Plan.PROFESSIONAL])
def test_too_old_start_is_clamped_to_the_plans_depth(make_api, plan):
    """The clamped start then anchors the window, as if the caller had sent it."""
    api = make_api(keys={"k": plan.value})
    got = [
        bar["time"]
        for bar in api.data(
            PRICE, "k", **PAIR, interval="1m", start_time=NOW_MS - 30 * DAY_MS, limit=3
        )
    ]
    earliest = NOW_MS - history_days(plan, "1m") * DAY_MS
    first = earliest - earliest % MINUTE_MS + MINUTE_MS
    assert got == hours(first, 3, MINUTE_MS)


def test_every_history_endpoint_applies_the_same_window(api):
    window = {"interval": "1h", "start_time": T0, "limit": 4}
    for path, params in [
        ("/api/futures/funding-rate/oi-weight-history", {"symbol": "SOL"}),
        ("/api/futures/liquidation/aggregated-history", {"symbol": "SOL", "exchange_list": "OKX"}),
        ("/api/futures/top-long-short-account-ratio/history", PAIR),
    ]:
        assert [bar["time"] for bar in api.data(path, **params, **window)] == hours(T0, 4)
