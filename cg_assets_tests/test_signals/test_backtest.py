"""The scorecard's maths on hand-computed cases: alignment, pending, cooldowns, bootstrap, BH."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from cg_assets.coinglass.plans import HOUR_MS
from cg_assets.signals.backtest import (
    DONE,
    MISSING,
    PENDING,
    PriceBars,
    adverse_excursion,
    bh_qvalues,
    block_bootstrap,
    bootstrap_mean,
    delivered,
    episodes,
    forward_returns,
    signed_returns,
    threshold_sweep,
)
from cg_assets.signals.rules import Side, Thresholds, predicted_side
from cg_assets.signals.scorecard import sweep_thresholds
from cg_assets.telegram.ledger import Policy

H = HOUR_MS


def bars(n: int = 10, skip: tuple[int, ...] = ()) -> PriceBars:
    """Bar i opens at 100 + 10 i and closes at 105 + 10 i; low = open - 1, high = close + 2."""
    i = np.array([k for k in range(n) if k not in skip], dtype=np.int64)
    opens = 100.0 + 10 * i
    return PriceBars(i * H, opens, opens + 7, opens - 1, opens + 5, interval_ms=H)


def test_outcome_starts_at_the_next_bars_open_and_ends_at_the_close_horizon_later():
    out = forward_returns(bars(), np.array([2 * H]), 3 * H)
    # Signal on bar 2 (closes at 3h): entry = open of bar 3 = 130; exit = close of bar 5 = 155.
    assert out.status.tolist() == [DONE]
    assert out.entry_ts_ms.tolist() == [3 * H]
    assert out.exit_ts_ms.tolist() == [6 * H]
    assert out.entry_price.tolist() == [130.0]
    assert out.exit_price.tolist() == [155.0]
    assert out.ret_pct[0] == pytest.approx((155 / 130 - 1) * 100)
    # Lowest low over bars 3..5 is bar 3's (129), highest high bar 5's (157).
    assert out.low_pct[0] == pytest.approx((129 / 130 - 1) * 100)
    assert out.high_pct[0] == pytest.approx((157 / 130 - 1) * 100)


def test_no_price_at_or_before_the_signal_bars_close_is_used():
    base = bars()
    poisoned = PriceBars(
        base.ts_ms,
        *(np.where(base.ts_ms <= 2 * H, 1e9, col) for col in (base.open, base.high, base.low)),
        np.where(base.ts_ms <= 2 * H, 1e9, base.close),
        interval_ms=H,
    )
    clean = forward_returns(base, np.array([2 * H]), 3 * H)
    dirty = forward_returns(poisoned, np.array([2 * H]), 3 * H)
    assert dirty.ret_pct.tolist() == clean.ret_pct.tolist()
    assert dirty.low_pct.tolist() == clean.low_pct.tolist()
    assert dirty.high_pct.tolist() == clean.high_pct.tolist()


def test_horizon_not_passed_is_pending_with_nan_never_zero():
    out = forward_returns(bars(10), np.array([6 * H, 7 * H, 9 * H]), 3 * H)
    # Bar 6 -> bars 7..9 exist: done. Bar 7 -> needs bar 10: pending. Bar 9: pending.
    assert out.status.tolist() == [DONE, PENDING, PENDING]
    assert np.isnan(out.ret_pct[1:]).all()
    assert np.isnan(out.entry_price[1:]).all()


def test_a_gap_inside_the_window_is_missing_not_pending():
    out = forward_returns(bars(10, skip=(4,)), np.array([2 * H, 5 * H]), 3 * H)
    assert out.status.tolist() == [MISSING, DONE]
    assert math.isnan(out.ret_pct[0])


def test_horizon_must_be_a_multiple_of_the_interval():
    with pytest.raises(ValueError, match="horizon_ms=1800000"):
        forward_returns(bars(), np.array([0]), H // 2)


def test_returns_are_signed_by_the_prediction_and_context_rules_score_the_size():
    ret = np.array([2.0, 2.0, -3.0])
    side = np.array([1, -1, 0])
    assert signed_returns(ret, side).tolist() == [2.0, -2.0, 3.0]
    mae = adverse_excursion(np.array([-1.0, -1.0, -1.0]), np.array([4.0, 4.0, 4.0]), side)
    assert mae.tolist() == [-1.0, -4.0, -4.0]


@pytest.mark.parametrize(
    ("rule", "evidence", "side"),
    [
        ("funding", {"funding_avg_8h_pct": 0.12}, Side.DOWN),
        ("funding", {"funding_avg_8h_pct": -0.07}, Side.UP),
        ("liquidations", {"kind": "long"}, Side.UP),
        ("liquidations", {"kind": "short"}, Side.DOWN),
        ("liquidations", {"kind": "total"}, Side.NONE),
        ("retail_positioning", {"retail_long_pct": 70.0}, Side.DOWN),
        ("retail_positioning", {"retail_long_pct": 35.0}, Side.UP),
        ("smart_money", {"top_account_long_pct": 60.0, "retail_long_pct": 45.0}, Side.UP),
        ("taker_flow", {"taker_buy_share_pct": 30.0}, Side.DOWN),
        ("heatmap_zone", {"side": "below"}, Side.DOWN),
        ("oi_change", {}, Side.NONE),
        ("confluence", {}, Side.NONE),
    ],
)
def test_each_rule_states_the_side_it_predicts(rule: str, evidence: dict, side: Side):
    assert predicted_side(rule, evidence) is side


def test_evidence_without_the_hypothesis_field_names_it():
    with pytest.raises(ValueError, match="rule='funding': evidence has no 'funding_avg_8h_pct'"):
        predicted_side("funding", {})


def test_cooldowns_keep_what_a_user_received():
    policy = Policy(dedup_s=300, cooldown_s={"HIGH": 1800, "MEDIUM": 3600, "LOW": 6 * 3600})
    minute = 60.0
    ts = [0, 20 * minute, 40 * minute, 50 * minute, 55 * minute, 60 * minute, 0]
    coins = ["BTC"] * 6 + ["ETH"]
    rules = ["funding"] * 7
    levels = ["HIGH", "HIGH", "HIGH", "LOW", "HIGH", "LOW", "HIGH"]
    keep = delivered(ts, coins, rules, levels, policy)
    # 0: sent. 20 min: HIGH cooldown (30 min, 1 min slack). 40 min: sent (the 20-min one was
    # held back, so it holds nothing back). 50 min: LOW within the 5-min dedup? No: 10 min
    # later, but a HIGH 10 min ago outranks it (cooldown of LOW: 6 h). 55 min: HIGH 15 min
    # after the 40-min one: cooldown. 60 min: LOW, HIGH 20 min ago: held. ETH: its own.
    assert keep.tolist() == [True, False, True, False, False, False, True]


def test_an_escalation_is_received_after_the_dedup_window():
    policy = Policy()
    keep = delivered(
        [0.0, 240.0, 600.0], ["BTC"] * 3, ["oi_change"] * 3, ["MEDIUM", "HIGH", "HIGH"], policy
    )
    # HIGH 4 min after MEDIUM: within the 5-min dedup. HIGH at 10 min: escalation, sent.
    assert keep.tolist() == [True, False, True]


def test_events_with_overlapping_windows_form_one_episode():
    ts = np.array([0, 1, 2, 10, 11, 30]) * H
    assert episodes(ts, 4 * H).tolist() == [0, 0, 0, 1, 1, 2]
    assert episodes(ts, H).tolist() == [0, 1, 2, 3, 4, 5]


def test_block_bootstrap_keeps_blocks_whole():
    # Two blocks with constant values: every resample mean is a mix of whole blocks only.
    x = np.array([1.0, 1.0, 1.0, 5.0])
    mean, se, r = block_bootstrap(x, np.array([0, 0, 0, 1]), 4000, np.random.default_rng(0))
    assert mean == 2.0
    # Block sums 3 and 5 over 3 and 1 events: (3 - 2*3)^2 + (5 - 2*1)^2 = 18, times k/(k-1) = 2,
    # square root over 4 events.
    assert se == pytest.approx(math.sqrt(18 * 2) / 4)
    # Possible resamples: (A, A) = 1, (A, B) or (B, A) = 2, (B, B) = 5.
    assert set(np.round(r.means, 9)) == {1.0, 2.0, 5.0}
    share = {v: np.mean(np.isclose(r.means, v)) for v in (1.0, 2.0, 5.0)}
    assert share[2.0] == pytest.approx(0.5, abs=0.03)
    assert share[1.0] == pytest.approx(0.25, abs=0.03)
    # A resample of one block twice has no spread between blocks.
    assert np.all(r.ses[~np.isclose(r.means, 2.0)] == 0)


def test_bootstrap_on_a_known_series():
    rng = np.random.default_rng(7)
    # 400 independent N(0.5, 1) draws, one per block: the mean's 95 % interval is about
    # 0.5 +- 1.96 / 20 and excludes zero by far.
    x = rng.normal(0.5, 1.0, 400)
    est = bootstrap_mean(x, np.arange(400), np.random.default_rng(1))
    assert est.mean == pytest.approx(x.mean())
    assert est.low == pytest.approx(x.mean() - 1.96 * x.std() / 20, abs=0.02)
    assert est.high == pytest.approx(x.mean() + 1.96 * x.std() / 20, abs=0.02)
    assert est.p < 0.001
    # The same values centred on zero: no effect, a large p-value, an interval around 0.
    null = bootstrap_mean(x - x.mean(), np.arange(400), np.random.default_rng(1))
    assert null.low < 0 < null.high
    assert null.p > 0.5


def test_bootstrap_needs_two_blocks():
    with pytest.raises(ValueError, match="at least two blocks"):
        block_bootstrap(np.ones(3), np.zeros(3, dtype=int), 10, np.random.default_rng(0))


def test_benjamini_hochberg_matches_the_hand_computed_q_values():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # Sorted 0.01, 0.03, 0.04, 0.20 (m = 4): 0.04, 0.06, 0.0533, 0.20 -> running minimum
    # from the top: 0.04, 0.0533, 0.0533, 0.20. NaN is not in the family.
    q = bh_qvalues(p)
    assert q[:4] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])
    assert math.isnan(q[4])


def test_threshold_sweep_counts_and_hit_rates():
    value = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    side = np.array([1, 1, -1, -1, 1])
    ret = np.array([0.5, -0.5, -1.0, 2.0, 9.0])
    points = threshold_sweep(value, side, ret, 0.3, [0.0, 2.5, 5.0])
    # > 0: signed 0.5, -0.5, 1.0, -2.0 -> 2 of 4 hits; > 2.5: 1.0, -2.0 -> 1 of 2; > 5: none.
    assert [(p.n, p.hit_rate) for p in points[:2]] == [(4, 0.5), (2, 0.5)]
    assert points[0].mean_pct == pytest.approx(-0.25)
    assert points[2].n == 0
    assert math.isnan(points[2].hit_rate)


def test_a_strong_effect_gets_a_p_value_below_the_resamples_floor():
    # Benjamini-Hochberg multiplies the smallest p by the table's size: a p stuck at
    # 1 / (draws + 1) could never pass in a table of a hundred cells.
    x = np.random.default_rng(3).normal(1.0, 1.0, 200)
    est = bootstrap_mean(x, np.arange(200), np.random.default_rng(0), draws=999)
    assert est.p < 1e-6
    assert est.low > 0.5


def test_the_sweep_grades_each_bar_by_the_rules_metric_and_hypothesis():
    # 12 bars rising 1 % each; funding alternates +0.2 % and -0.2 % per 8 h on bars 0..5.
    n = 12
    opens = 100.0 * 1.01 ** np.arange(n)
    coin = PriceBars(np.arange(n) * H, opens, opens * 1.01, opens, opens * 1.01, interval_ms=H)
    rows = [
        {
            "ts": datetime.fromtimestamp(i * H / 1000, UTC),
            "symbol": "BTC",
            "funding_avg_8h_pct": (0.2 if i % 2 == 0 else -0.2) if i < 6 else 0.01,
        }
        for i in range(n)
    ]
    [funding, *_] = sweep_thresholds(rows, {"BTC": coin}, Thresholds(), 4 * H)
    assert funding.sweep.metric == "funding"
    at_floor = next(p for p in funding.points if p.threshold == pytest.approx(0.10))
    # Bars 0..5 exceed 0.10 in size and all have a finished 4 h outcome (entry bar i+1, exit
    # bar i+4 <= 11). The price rose: the positive-funding calls (down) missed, the negative
    # ones (up) hit: 3 of 6.
    assert at_floor.n == 6
    assert at_floor.hit_rate == pytest.approx(0.5)
