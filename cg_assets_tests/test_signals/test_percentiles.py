"""Adaptive thresholds: floors, cuts, fallbacks, and DuckDB's rolling quantiles against numpy."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from cg_assets.signals.engine import metric_table
from cg_assets.signals.percentiles import (
    Percentiles,
    level_cuts,
    level_floors,
    rolling_percentiles,
)
from cg_assets.signals.rules import (
    METRICS,
    Level,
    Snapshot,
    Thresholds,
    funding_rule,
    retail_positioning_rule,
    taker_flow_rule,
)

T = Thresholds(adaptive_min_samples=100)
START = datetime(2026, 1, 1, tzinfo=UTC)


def pct(p85: float, p95: float, p99: float, samples: int = 500) -> Percentiles:
    return Percentiles(p85, p95, p99, samples)


@pytest.mark.parametrize(
    ("fixed", "expected"),
    [
        ({"HIGH": 0.10, "MEDIUM": 0.06}, {"LOW": 0.06, "MEDIUM": 0.06, "HIGH": 0.10}),
        ({"HIGH": 0.05, "MEDIUM": 0.06}, {"LOW": 0.05, "MEDIUM": 0.05, "HIGH": 0.05}),
        ({"HIGH": 65.0}, {"LOW": 65.0, "MEDIUM": 65.0, "HIGH": 65.0}),
        ({"MEDIUM": 15.0}, {"LOW": 15.0, "MEDIUM": 15.0, "HIGH": math.inf}),
    ],
)
def test_level_floors(fixed: dict, expected: dict):
    assert level_floors(fixed) == expected


def test_cuts_never_fall_below_the_floors():
    cuts, origin = level_cuts({"HIGH": 0.10, "MEDIUM": 0.06}, pct(0.01, 0.08, 0.30), 100, 30)
    assert cuts == {"LOW": 0.06, "MEDIUM": 0.08, "HIGH": 0.30}
    assert origin["basis"].startswith("adaptive")
    assert origin["percentiles"] == {"p85": 0.01, "p95": 0.08, "p99": 0.30, "samples": 500}


def test_too_little_history_falls_back_to_the_floors_and_says_so():
    cuts, origin = level_cuts({"HIGH": 0.10}, pct(0.2, 0.3, 0.4, samples=99), 100, 30)
    assert cuts == {"LOW": 0.10, "MEDIUM": 0.10, "HIGH": 0.10}
    assert origin == {
        "basis": "fixed thresholds: 99 sample(s) in the last 30 d, adaptive needs 100"
    }
    cuts, origin = level_cuts({"HIGH": 0.10}, None, 100, 30)
    assert origin == {"basis": "fixed thresholds (adaptive off)"}


@pytest.mark.parametrize(
    ("value", "history", "expected"),
    [
        # a volatile coin: 0.12 is only above its p95, so HIGH becomes MEDIUM
        (0.12, pct(0.07, 0.11, 0.20), Level.MEDIUM),
        (0.12, pct(0.07, 0.13, 0.20), Level.LOW),
        (0.21, pct(0.07, 0.13, 0.20), Level.HIGH),
        # above the fixed MEDIUM floor but routine for this coin (below its p85): no signal
        (0.065, pct(0.07, 0.13, 0.20), None),
        # a calm coin: percentiles far below the floors change nothing
        (0.065, pct(0.001, 0.002, 0.003), Level.MEDIUM),
        (0.05, pct(0.001, 0.002, 0.003), None),
        (0.11, pct(0.001, 0.002, 0.003), Level.HIGH),
    ],
)
def test_adaptive_funding(value: float, history: Percentiles, expected: Level | None):
    finding = funding_rule(value, T, {"funding": history})
    assert (finding.level if finding else None) == expected


def test_adaptive_never_lifts_a_rule_above_its_fixed_levels():
    finding = taker_flow_rule(99.0, T, {"taker_flow": pct(1.0, 2.0, 3.0)})
    assert finding is not None
    assert finding.level == Level.MEDIUM


def test_adaptive_grades_a_single_floor_rule_down():
    history = {"retail_long": pct(66.0, 70.0, 80.0), "retail_short": pct(40.0, 45.0, 50.0)}
    finding = retail_positioning_rule(72.0, T, history)
    assert finding is not None
    assert finding.level == Level.MEDIUM
    assert finding.evidence["cuts"] == {"LOW": 66.0, "MEDIUM": 70.0, "HIGH": 80.0}


def test_without_history_the_evidence_names_the_fallback():
    finding = funding_rule(0.2, T, {})
    assert finding is not None
    assert finding.level == Level.HIGH
    assert finding.evidence["basis"] == (
        "fixed thresholds: 0 sample(s) in the last 30 d, adaptive needs 100"
    )
    off = funding_rule(0.2, replace(T, adaptive=False), {"funding": pct(1, 2, 3)})
    assert off is not None
    assert off.level == Level.HIGH
    assert off.evidence["basis"] == "fixed thresholds (adaptive off)"


def history(hours: int, seed: int = 5) -> list[Snapshot]:
    rng = np.random.default_rng(seed)
    return [
        Snapshot(
            ts=START + timedelta(hours=h),
            symbol=symbol,
            funding_avg_8h_pct=float(rng.normal(0.01, 0.03)),
            oi_change_1_pct=float(rng.normal(0, 2)),
            long_liq_usd=float(rng.gamma(2, 1e6)),
            short_liq_usd=None if h % 7 == 0 else float(rng.gamma(2, 1e6)),
            retail_long_pct=float(rng.uniform(35, 70)),
        )
        for h in range(hours)
        for symbol in ("BTC", "ETH")
    ]


def test_rolling_percentiles_match_numpy_over_the_trailing_window():
    snaps = history(24 * 12)
    window = timedelta(days=5)
    first = START + timedelta(days=6)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        result = rolling_percentiles(con, metric_table(snaps), window, first)
    finally:
        con.close()
    evaluated = [s for s in snaps if s.ts >= first]
    assert {k for k in result} == {(s.ts, s.symbol) for s in evaluated}
    for s in evaluated[::37]:
        for metric, fn in METRICS.items():
            past = [
                v
                for p in snaps
                if p.symbol == s.symbol
                and s.ts - window <= p.ts < s.ts
                and (v := fn(p)) is not None
            ]
            if fn(s) is None:
                assert metric not in result[(s.ts, s.symbol)]
                continue
            got = result[(s.ts, s.symbol)][metric]
            assert got.samples == len(past)
            if past:
                expected = np.quantile(past, [0.85, 0.95, 0.99])  # linear = quantile_cont
                assert [got.p85, got.p95, got.p99] == pytest.approx(expected, rel=1e-9)


def test_the_first_bar_has_no_samples():
    snaps = history(3)
    con = duckdb.connect()
    try:
        result = rolling_percentiles(con, metric_table(snaps), timedelta(days=30), START)
    finally:
        con.close()
    first = result[(START, "BTC")]["funding"]
    assert first.samples == 0
    assert result[(START + timedelta(hours=2), "BTC")]["funding"].samples == 2


def test_metric_table_skips_missing_values():
    snaps = history(14)
    table = metric_table(snaps)
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    short = [r for r in table.to_pylist() if r["metric"] == "short_liq"]
    assert len(short) == sum(s.short_liq_usd is not None for s in snaps)
    assert {r["metric"] for r in table.to_pylist()} == {
        m for m in METRICS if any(METRICS[m](s) is not None for s in snaps)
    }
