"""The planted test day does what the signal tests rely on, whatever the seed and the date."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS
from cg_assets_tests.test_signals.planted import (
    LATE_HOUR,
    PLANTED_COINS,
    day_start_ms,
    planted_market,
)

# Spread over seasons, month ends, a leap day and years ahead of today.
DATES = [
    "2025-03-01",
    "2025-08-31",
    "2026-02-28",
    "2026-06-15",
    "2026-11-30",
    "2026-12-31",
    "2027-04-18",
    "2027-09-09",
    "2028-02-29",
    "2028-10-01",
]
SEEDS = [11, 3, 2024]
FUNDING_PAIRS = {"Binance": "{coin}USDT", "OKX": "{coin}-USDT-SWAP"}
FUNDING_HIGH = 0.10  # the documented fixed HIGH floor (percent per 8 h)


def hourly_funding(day: date, seed: int, coin: str) -> np.ndarray:
    """Mean funding close over the configured exchanges, per hourly bar: what the snapshot holds."""
    market = planted_market(day, seed)
    start = day_start_ms(day)
    closes = [
        market.funding_history(
            exchange, pair.format(coin=coin), HOUR_MS, start, start + DAY_MS, start + 2 * DAY_MS
        )["close"].to_numpy()
        for exchange, pair in FUNDING_PAIRS.items()
    ]
    return np.mean(closes, axis=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("day", DATES)
def test_late_episode_crosses_the_fixed_floor_and_sits_below_the_days_p99(day: str, seed: int):
    for coin in PLANTED_COINS:
        funding = hourly_funding(date.fromisoformat(day), seed, coin)
        assert len(funding) == 24
        late = funding[LATE_HOUR]
        before = funding[:LATE_HOUR]
        assert late > FUNDING_HIGH, (coin, late)
        # Enough samples before it for adaptive_min_samples=12, and the early episode lifts the
        # day's p99 (linear interpolation, as DuckDB's quantile_cont) above the late peak.
        assert len(before) >= 12
        assert np.percentile(before, 99) > late, (coin, before.max(), late)
