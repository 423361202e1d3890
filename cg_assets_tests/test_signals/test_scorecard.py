"""The scorecard finds planted effects and, on independent data, little else.

Runs the real pipeline (rules, outcomes, DuckDB aggregation, bootstrap, BH) on the simulator's
hourly frames without Dagster (`backtest_frames`), so twenty seeds take seconds.
"""

from __future__ import annotations

import pytest

from cg_assets.coinglass.plans import DAY_MS
from cg_assets.signals.backtest import MIN_EPISODES
from cg_assets.signals.rules import Thresholds
from cg_assets.sim.scenarios import planted_effects
from cg_assets_tests.backtest_frames import START_MS, hourly_frames, scorecard, signal_rows

COINS = ("BTC", "ETH", "SOL")
FIXED = Thresholds(adaptive=False)


def cell(rows: list[dict], rule: str, level: str, coin: str, horizon: str, side: str) -> dict:
    [row] = [
        r
        for r in rows
        if (r["rule"], r["level"], r["symbol"], r["horizon"], r["side"])
        == (rule, level, coin, horizon, side)
    ]
    return row


@pytest.fixture(scope="module")
def planted() -> list[dict]:
    days = 120
    scenario = planted_effects(START_MS, START_MS + days * DAY_MS, COINS, seed=3)
    frames = hourly_frames(3, COINS, days, scenario)
    return scorecard(signal_rows(frames.snapshots, FIXED), frames.bars).to_pylist()


def test_finds_the_planted_funding_drift(planted: list[dict]):
    # BTC: funding crowded above 0.10 % then a -0.8 % drift over 4 h: predicted down, and it was.
    row = cell(planted, "funding", "HIGH", "BTC", "4h", "down")
    assert row["n"] >= 100
    assert row["mean_pct"] > 0.3  # signed: the price fell
    assert 0 < row["ci_low_pct"] <= row["effect_pct"] <= row["ci_high_pct"]
    assert row["q_value"] < 0.05
    assert row["hit_rate"] > row["baseline_hit_rate"]


def test_finds_the_planted_cascade_bounce(planted: list[dict]):
    # ETH: long cascades whose break is undone within the hour: predicted up, and it was.
    for horizon in ("1h", "4h"):
        row = cell(planted, "liquidations", "HIGH", "ETH", horizon, "up")
        assert row["mean_pct"] > 1.0
        assert row["ci_low_pct"] > 0
        assert row["q_value"] < 0.05


def test_overlapping_24h_windows_are_not_counted_as_independent_evidence(planted: list[dict]):
    # Drifts 12 h apart: their 24 h windows chain into a few long episodes, too few to test.
    row = cell(planted, "funding", "HIGH", "BTC", "24h", "down")
    assert row["n"] >= 100
    assert row["episodes"] < MIN_EPISODES
    assert row["p_value"] is None
    assert row["q_value"] is None
    assert row["ci_low_pct"] is None


def test_in_and_out_of_sample_add_up(planted: list[dict]):
    row = cell(planted, "funding", "HIGH", "BTC", "4h", "down")
    assert row["is_n"] + row["oos_n"] == row["n"]
    assert row["is_n"] > 0
    assert row["oos_n"] > 0
    assert row["oos_mean_pct"] > 0  # the planted effect holds out of sample too


@pytest.mark.slow
def test_fdr_control_on_independent_signals_across_20_seeds():
    """Signals of one calm market, prices of 20 others: every null is true, so a q < 0.05 is a
    false discovery. Under a true global null BH bounds the chance of any discovery in a table
    by 5 %: at most 3 of 20 seeds may have one (a 5 % rate gives 4 or more in 1.6 % of runs),
    and the false discoveries stay under 5 % of the tested cells."""
    signals = signal_rows(hourly_frames(1000, COINS, 60).snapshots, FIXED)
    tested = discoveries = seeds_with_any = 0
    for seed in range(20):
        prices = hourly_frames(seed, COINS, 60).bars
        rows = [r for r in scorecard(signals, prices, seed=seed).to_pylist() if r["q_value"]]
        found = sum(r["q_value"] < 0.05 for r in rows)
        tested += len(rows)
        discoveries += found
        seeds_with_any += bool(found)
    assert tested >= 400, tested  # enough cells for the rates to mean something
    assert seeds_with_any <= 3, (discoveries, tested, seeds_with_any)
    assert discoveries / tested <= 0.05, (discoveries, tested, seeds_with_any)
