"""A market day whose funding story is planted, so signal tests hold on every calendar day.

The calm synthetic market crosses the funding thresholds a few times a week, so a test that
takes "two days ago" of it as its data passes on some days and fails on others. Instead, each
coin gets two crowded-long episodes on the test day: a strong one early and a weaker one late.
The late one crosses the fixed HIGH floor on its own, while the early one sits in the coin's
history of that day, so adaptive percentiles grade the late one down. `test_planted.py` proves
both facts over a sweep of seeds and dates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from cg_assets.coinglass.plans import HOUR_MS, MINUTE_MS
from cg_assets.sim import Episode, Scenario, SyntheticMarket

PLANTED_COINS = ("BTC", "ETH")
EARLY_HOUR, EARLY_STRENGTH = 4, 2.0
LATE_HOUR, LATE_STRENGTH = 16, 0.8
# 20 minutes into the hour: the bar that closes 40 minutes later holds the peak of the crowding.
_INTO_HOUR_MIN = 20


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)


def planted_scenario(day: date) -> Scenario:
    start = day_start_ms(day)
    episodes = [
        Episode(start + hour * HOUR_MS + _INTO_HOUR_MIN * MINUTE_MS, coin, "cascade", strength)
        for coin in PLANTED_COINS
        for hour, strength in ((EARLY_HOUR, EARLY_STRENGTH), (LATE_HOUR, LATE_STRENGTH))
    ]
    return Scenario("planted", tuple(sorted(episodes, key=lambda e: e.start_ms)))


def planted_market(day: date, seed: int = 11) -> SyntheticMarket:
    return SyntheticMarket(seed=seed, scenario=planted_scenario(day))


def recent_day(days_back: int = 2) -> date:
    """A closed day near today: any day works, the planted episodes make the data."""
    return (datetime.now(UTC) - timedelta(days=days_back)).date()
