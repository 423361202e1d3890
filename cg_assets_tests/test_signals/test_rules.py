"""Each rule at, just below and just above its thresholds; missing inputs; confluence."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest

from cg_assets.signals.engine import SignalsConfig
from cg_assets.signals.rules import (
    EVIDENCE_GROUP,
    METRICS,
    Level,
    Rule,
    Snapshot,
    Thresholds,
    ThresholdsError,
    Zone,
    confluence,
    evaluate,
    funding_rule,
    heatmap_zone_rule,
    liquidations_rule,
    oi_change_rule,
    retail_positioning_rule,
    signal_id,
    skipped_rules,
    smart_money_rule,
    taker_flow_rule,
)

T = Thresholds(adaptive=False)
EPS = 1e-9
M = 1_000_000.0
TS = datetime(2026, 3, 1, 12, tzinfo=UTC)


def level_of(finding: object) -> Level | None:
    return None if finding is None else finding.level  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("avg", "expected"),
    [
        (0.10, Level.MEDIUM),  # at the HIGH threshold: not above it
        (0.10 + EPS, Level.HIGH),
        (0.10 - EPS, Level.MEDIUM),
        (0.06, None),
        (0.06 + EPS, Level.MEDIUM),
        (0.06 - EPS, None),
        (-0.05, None),  # at the negative HIGH threshold, and |avg| below the MEDIUM one
        (-0.05 - EPS, Level.HIGH),
        (-0.05 + EPS, None),
        (-0.2, Level.HIGH),
        (0.0, None),
    ],
)
def test_funding_thresholds(avg: float, expected: Level | None):
    assert level_of(funding_rule(avg, T)) == expected


def test_funding_title_says_who_pays():
    positive, negative = funding_rule(0.12, T), funding_rule(-0.07, T)
    assert positive is not None
    assert negative is not None
    assert "+0.1200%" in positive.title
    assert "longs pay shorts" in positive.title
    assert "-0.0700%" in negative.title
    assert "shorts pay longs" in negative.title
    assert positive.evidence["funding_avg_8h_pct"] == 0.12
    assert positive.evidence["cuts"] == {"LOW": 0.06, "MEDIUM": 0.06, "HIGH": 0.10}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (5.0, Level.MEDIUM),
        (5.0 + EPS, Level.HIGH),
        (5.0 - EPS, Level.MEDIUM),
        (2.5, None),
        (2.5 + EPS, Level.MEDIUM),
        (2.5 - EPS, None),
        (-5.0 - EPS, Level.HIGH),
        (-2.5 - EPS, Level.MEDIUM),
        (-2.5, None),
    ],
)
def test_oi_change_thresholds(change: float, expected: Level | None):
    assert level_of(oi_change_rule(change, T)) == expected


def test_oi_change_direction_in_title():
    up, down = oi_change_rule(6.0, T), oi_change_rule(-3.0, T, window="4h")
    assert up is not None
    assert down is not None
    assert "up 6.00% in 1h" in up.title
    assert "down 3.00% in 4h" in down.title


@pytest.mark.parametrize(
    ("long_usd", "short_usd", "expected", "kind"),
    [
        (50 * M, 0.0, Level.MEDIUM, "total"),  # at the long threshold, but above the total
        (50 * M + 1, 0.0, Level.HIGH, "long"),
        (0.0, 50 * M + 1, Level.HIGH, "short"),
        (0.0, 50 * M, Level.MEDIUM, "total"),
        (12.5 * M, 12.5 * M, None, None),  # total exactly at 25M
        (12.5 * M, 12.5 * M + 1, Level.MEDIUM, "total"),
        (12.5 * M, 12.5 * M - 1, None, None),
        (60 * M, 55 * M, Level.HIGH, "long"),  # both sides: the first listed wins the tie
    ],
)
def test_liquidation_thresholds(
    long_usd: float, short_usd: float, expected: Level | None, kind: str | None
):
    finding = liquidations_rule(long_usd, short_usd, T)
    assert level_of(finding) == expected
    if finding is not None:
        assert finding.evidence["kind"] == kind


def test_liquidation_titles_name_the_side():
    cascade = liquidations_rule(62.1 * M, 1 * M, T)
    squeeze = liquidations_rule(1 * M, 55 * M, T)
    assert cascade is not None
    assert squeeze is not None
    assert cascade.title.startswith("Long liquidation cascade: $62.1M")
    assert squeeze.title.startswith("Short squeeze: $55.0M")


@pytest.mark.parametrize(
    ("long_pct", "expected", "side"),
    [
        (65.0, None, None),
        (65.0 + EPS, Level.HIGH, "long"),
        (65.0 - EPS, None, None),
        (40.0, None, None),  # 60% short: at the threshold
        (40.0 - EPS, Level.MEDIUM, "short"),
        (40.0 + EPS, None, None),
        (50.0, None, None),
    ],
)
def test_retail_positioning_thresholds(long_pct: float, expected: Level | None, side: str | None):
    finding = retail_positioning_rule(long_pct, T)
    assert level_of(finding) == expected
    if finding is not None:
        assert f"crowded {side}" in finding.title


@pytest.mark.parametrize(
    ("top", "retail", "expected"),
    [
        (60.0, 50.0, Level.HIGH),  # a gap of exactly 10 points fires (at least 10)
        (60.0 - 1e-6, 50.0, None),
        (60.0 + 1e-6, 50.0, Level.HIGH),
        (40.0, 50.0, Level.HIGH),
        (40.0 + 1e-6, 50.0, None),
    ],
)
def test_smart_money_thresholds(top: float, retail: float, expected: Level | None):
    assert level_of(smart_money_rule(top, retail, T)) == expected


def test_smart_money_is_worded_by_the_top_traders_side():
    shorter = smart_money_rule(48.0, 66.0, T)
    longer = smart_money_rule(70.0, 45.0, T)
    assert shorter is not None
    assert longer is not None
    assert shorter.title.startswith("Smart money shorter than retail: top traders 48.0% long")
    assert longer.title.startswith("Smart money longer than retail")


@pytest.mark.parametrize(
    ("share", "expected", "side"),
    [
        (65.0, None, None),
        (65.0 + EPS, Level.MEDIUM, "buying"),
        (65.0 - EPS, None, None),
        (35.0, None, None),
        (35.0 - EPS, Level.MEDIUM, "selling"),
        (35.0 + EPS, None, None),
        (99.0, Level.MEDIUM, "buying"),  # taker flow never reaches HIGH
    ],
)
def test_taker_flow_thresholds(share: float, expected: Level | None, side: str | None):
    finding = taker_flow_rule(share, T)
    assert level_of(finding) == expected
    if finding is not None:
        assert finding.title.startswith(f"Aggressive {side}")


@pytest.mark.parametrize(
    ("score", "fires"), [(0.75, True), (0.75 - 1e-6, False), (0.75 + 1e-6, True)]
)
def test_heatmap_zone_score_threshold(score: float, fires: bool):
    finding = heatmap_zone_rule(100.0, [Zone(98.0, 99.0, score)], T)
    assert (finding is not None) is fires


def test_heatmap_zone_picks_the_nearest_strong_zone_and_its_side():
    zones = [
        Zone(90.0, 91.0, 0.95),  # strong but far below
        Zone(101.0, 102.0, 0.80),  # strong, nearest, above
        Zone(99.5, 100.0, 0.50),  # nearest of all, but weak
    ]
    above = heatmap_zone_rule(100.0, zones, T)
    assert above is not None
    assert above.level == Level.MEDIUM
    assert above.evidence["price_low"] == 101.0
    assert above.evidence["side"] == "above"
    assert "short-side magnet" in above.title
    below = heatmap_zone_rule(100.0, [Zone(97.0, 98.0, 0.9)], T)
    assert below is not None
    assert "long-side magnet" in below.title
    assert below.evidence["distance_pct"] == pytest.approx(-2.5)
    assert heatmap_zone_rule(100.0, [], T) is None


def snapshot(**values: object) -> Snapshot:
    """A calm market: no rule fires."""
    base: dict[str, object] = {
        "ts": TS,
        "symbol": "BTC",
        "funding_avg_8h_pct": 0.01,
        "oi_usd": 1e10,
        "oi_change_1_pct": 0.2,
        "oi_change_24_pct": 1.0,
        "long_liq_usd": 1 * M,
        "short_liq_usd": 1 * M,
        "retail_long_pct": 52.0,
        "top_account_long_pct": 55.0,
        "top_position_long_pct": 54.0,
        "taker_buy_share_pct": 51.0,
        "price": 100.0,
        "price_change_pct": 0.1,
    }
    base.update(values)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_a_calm_market_gives_no_signal():
    assert evaluate(snapshot(), T, zones=[]) == []


def test_missing_inputs_skip_their_rules_with_the_snapshot_reason():
    s = snapshot(
        retail_long_pct=None,
        taker_buy_share_pct=None,
        funding_avg_8h_pct=0.5,
        missing={
            "retail_long_pct": "no long_short_ratio global_account bar",
            "taker_buy_share_pct": "no taker_volume bar",
        },
    )
    skipped = skipped_rules(s, zones=None, no_zones_reason="composite_heatmap is not in the lake")
    assert skipped == {
        Rule.RETAIL_POSITIONING: "retail_long_pct: no long_short_ratio global_account bar",
        Rule.SMART_MONEY: "retail_long_pct: no long_short_ratio global_account bar",
        Rule.TAKER_FLOW: "taker_buy_share_pct: no taker_volume bar",
        Rule.HEATMAP_ZONE: "composite_heatmap is not in the lake",
    }
    # A 50% stand-in would have let smart money fire (55 vs 50 is not 10 points, 65 vs 50 is).
    s = replace(s, top_account_long_pct=65.0)
    assert [sig.rule for sig in evaluate(s, T)] == [Rule.FUNDING]


def test_every_rule_input_none_means_skipped_not_evaluated():
    loud = snapshot(
        funding_avg_8h_pct=0.3,
        oi_change_1_pct=9.0,
        long_liq_usd=80 * M,
        retail_long_pct=80.0,
        top_account_long_pct=50.0,
        taker_buy_share_pct=90.0,
    )
    zones = [Zone(99.0, 99.5, 0.9)]
    fired = {s.rule for s in evaluate(loud, T, zones)} - {Rule.CONFLUENCE}
    assert fired == set(Rule) - {Rule.CONFLUENCE}
    for field_name in ("funding_avg_8h_pct", "oi_change_1_pct", "long_liq_usd", "price"):
        quiet = replace(loud, **{field_name: None})
        rules = {s.rule for s in evaluate(quiet, T, zones)}
        assert rules.isdisjoint(skipped_rules(quiet, zones))
        assert skipped_rules(quiet, zones)


def test_each_rule_grades_the_metric_its_percentiles_are_taken_over():
    loud = snapshot(
        funding_avg_8h_pct=-0.3,
        oi_change_1_pct=-9.0,
        long_liq_usd=80 * M,
        retail_long_pct=20.0,
        top_account_long_pct=50.0,
        taker_buy_share_pct=10.0,
    )
    for signal in evaluate(loud, T, zones=[]):
        if "metric" in signal.evidence:
            assert signal.evidence["value"] == METRICS[signal.evidence["metric"]](loud)


def test_snapshot_from_a_lake_row_parses_missing():
    row = {f.name: None for f in fields(Snapshot)}
    row.update(ts=TS, symbol="ETH", missing='{"price": "no price_ohlc bar"}', date="2026-03-01")
    s = Snapshot.from_row(row)
    assert s.missing == {"price": "no price_ohlc bar"}
    assert s.price is None


def test_signal_id_is_stable_and_distinct():
    assert signal_id(TS, "BTC", "funding") == signal_id(TS, "BTC", "funding")
    ids = {
        signal_id(TS, "BTC", "funding"),
        signal_id(TS, "ETH", "funding"),
        signal_id(TS, "BTC", "oi_change"),
        signal_id(TS + timedelta(hours=1), "BTC", "funding"),
    }
    assert len(ids) == 4


def test_signal_row_holds_json_evidence():
    [signal] = evaluate(snapshot(funding_avg_8h_pct=0.2), T)
    row = signal.to_row()
    assert row["rule"] == "funding"
    assert row["level"] == "HIGH"
    assert json.loads(row["evidence"])["funding_avg_8h_pct"] == 0.2
    assert row["signal_id"] == signal_id(TS, "BTC", "funding")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # funding MEDIUM + OI MEDIUM + taker MEDIUM: three groups, MEDIUM raised to HIGH
        ({"funding_avg_8h_pct": 0.07, "oi_change_1_pct": 3.0, "taker_buy_share_pct": 70.0}, "HIGH"),
        # retail and smart money share an input: two groups with funding, no confluence
        ({"funding_avg_8h_pct": 0.07, "retail_long_pct": 70.0, "top_account_long_pct": 50.0}, None),
        # HIGH stays HIGH
        ({"funding_avg_8h_pct": 0.2, "oi_change_1_pct": 9.0, "long_liq_usd": 90 * M}, "HIGH"),
    ],
)
def test_confluence(values: dict, expected: str | None):
    signals = evaluate(snapshot(**values), T)
    combined = [s for s in signals if s.rule is Rule.CONFLUENCE]
    if expected is None:
        assert combined == []
        return
    [c] = combined
    assert str(c.level) == expected
    individual = [s for s in signals if s.rule is not Rule.CONFLUENCE]
    assert len(individual) == 3  # the individual rows stay
    assert c.evidence["signal_ids"] == sorted(s.signal_id for s in individual)
    assert c.signal_id == signal_id(TS, "BTC", "confluence")


def test_confluence_raises_low_one_step_and_respects_the_minimum():
    low = [
        replace(s, level=Level.LOW)
        for s in evaluate(
            snapshot(funding_avg_8h_pct=0.07, oi_change_1_pct=3.0, taker_buy_share_pct=70.0), T
        )
        if s.rule is not Rule.CONFLUENCE
    ]
    combined = confluence(low, T)
    assert combined is not None
    assert combined.level == Level.MEDIUM
    assert confluence(low, replace(T, confluence_min_rules=4)) is None
    assert confluence(low[:2], T) is None


def test_confluence_counts_earlier_bars_of_the_hour():
    first = evaluate(snapshot(funding_avg_8h_pct=0.07), T)
    later = snapshot(ts=TS + timedelta(minutes=15), oi_change_1_pct=3.0, taker_buy_share_pct=70.0)
    signals = evaluate(later, T, recent=first)
    [combined] = [s for s in signals if s.rule is Rule.CONFLUENCE]
    assert combined.ts == later.ts
    assert combined.evidence["rules"] == ["funding", "oi_change", "taker_flow"]


def test_every_rule_has_an_evidence_group():
    assert set(EVIDENCE_GROUP) == set(Rule) - {Rule.CONFLUENCE}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"funding_high_pct": -0.1}, "funding_high_pct=-0.1"),
        ({"funding_medium_abs_pct": 0.2}, "funding_medium_abs_pct=0.2"),
        ({"oi_change_medium_pct": 6.0}, "oi_change_medium_pct=6.0"),
        ({"liq_total_medium_usd": 0.0}, "liq_total_medium_usd=0.0"),
        ({"retail_long_high_pct": 120.0}, "retail_long_high_pct=120.0"),
        ({"taker_buy_low_pct": 55.0}, "taker_buy_low_pct=55.0"),
        ({"heatmap_min_score": 1.5}, "heatmap_min_score=1.5"),
        ({"heatmap_zone_level": "URGENT"}, "heatmap_zone_level='URGENT'"),
        ({"confluence_min_rules": 1}, "confluence_min_rules=1"),
        ({"adaptive_window_days": 0}, "adaptive_window_days=0"),
        ({"funding_high_pct": float("nan")}, "funding_high_pct=nan"),
    ],
)
def test_bad_thresholds_name_field_and_value(changes: dict, named: str):
    with pytest.raises(ThresholdsError, match=re.escape(named)):
        Thresholds(**changes)


def test_all_bad_thresholds_are_reported_at_once():
    with pytest.raises(ThresholdsError) as info:
        Thresholds(oi_change_high_pct=-1.0, smart_money_gap_pts=0.0)
    assert len(info.value.problems) == 3  # high below 0, medium above high, gap 0


def test_config_mirrors_thresholds():
    config = SignalsConfig()
    assert config.thresholds() == Thresholds()
    assert set(SignalsConfig.model_fields) == {f.name for f in fields(Thresholds)}
    with pytest.raises(ThresholdsError, match=r"taker_buy_high_pct=40\.0"):
        SignalsConfig(taker_buy_high_pct=40.0).thresholds()
