"""Heads-up confirmation: each gauge at, just inside and just outside its limit; both sides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from cg_assets.alerts.confirm import ConfirmRules, Evidence, confirm, evidence_from_tables

RULES = ConfirmRules()
CASCADE = Evidence(
    taker_buy_share_pct=40.0,
    oi_change_pct=-1.0,
    funding_pct=0.01,
    long_liquidation_usd=8e6,
    short_liquidation_usd=1e6,
)


def agreeing(side: str, **changes: float | None) -> dict[str, bool]:
    evidence = Evidence(**{**CASCADE.__dict__, **changes})
    return {c.name: c.agrees for c in confirm(side, evidence, RULES).checks}


def test_a_textbook_long_cascade_is_confirmed_and_the_mirror_is_not():
    assert confirm("long", CASCADE, RULES).confirmed
    assert confirm("long", CASCADE, RULES).agreeing == 4
    short = confirm("short", CASCADE, RULES)
    assert not short.confirmed
    assert short.agreeing == 1  # only falling open interest fits a squeeze too


@pytest.mark.parametrize(
    ("share", "long_agrees", "short_agrees"),
    [(45.0, True, False), (45.01, False, False), (55.0, False, True), (54.99, False, False)],
)
def test_taker_flow_limits(share: float, long_agrees: bool, short_agrees: bool):
    assert agreeing("long", taker_buy_share_pct=share)["taker flow"] is long_agrees
    assert agreeing("short", taker_buy_share_pct=share)["taker flow"] is short_agrees


@pytest.mark.parametrize(("change", "agrees"), [(-0.5, True), (-0.49, False), (0.8, False)])
def test_open_interest_must_fall(change: float, agrees: bool):
    assert agreeing("long", oi_change_pct=change)["open interest"] is agrees


@pytest.mark.parametrize(("funding", "long_agrees"), [(0.0001, True), (0.0, False), (-0.01, False)])
def test_funding_shows_the_crowded_side(funding: float, long_agrees: bool):
    assert agreeing("long", funding_pct=funding)["funding"] is long_agrees
    assert agreeing("short", funding_pct=funding)["funding"] is (funding < 0)


@pytest.mark.parametrize(("long_usd", "agrees"), [(6e6, True), (5.99e6, False)])
def test_liquidation_share(long_usd: float, agrees: bool):
    checks = agreeing("long", long_liquidation_usd=long_usd, short_liquidation_usd=10e6 - long_usd)
    assert checks["liquidations"] is agrees


def test_missing_evidence_never_agrees_and_says_why():
    evidence = Evidence(None, None, None, None, None)
    result = confirm("long", evidence, RULES)
    assert not result.confirmed
    assert [c.detail for c in result.checks] == [
        "no taker volume bar",
        "no open-interest bars",
        "no funding bar",
        "no aggregated liquidation bars",
    ]


def test_three_of_four_is_enough_two_is_not():
    assert confirm("long", Evidence(**{**CASCADE.__dict__, "funding_pct": -0.01}), RULES).confirmed
    two = Evidence(**{**CASCADE.__dict__, "funding_pct": -0.01, "oi_change_pct": 0.2})
    assert not confirm("long", two, RULES).confirmed


def test_rules_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match="taker_share_pct must be in \\(0, 50\\), got 60"):
        ConfirmRules(taker_share_pct=60).validate()
    with pytest.raises(ValueError, match="min_agree must be between 1 and 4, got 5"):
        ConfirmRules(min_agree=5).validate()


def test_evidence_from_the_latest_bars():
    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    ts = [t0 + timedelta(minutes=5 * i) for i in range(5)]

    def table(**columns: list) -> pa.Table:
        return pa.table({"ts": pa.array(ts[: len(next(iter(columns.values())))]), **columns})

    tables = {
        "taker_volume": table(buy_volume_usd=[9e9, 1, 2, 3, 4], sell_volume_usd=[0, 2, 3, 4, 5]),
        "open_interest_ohlc": table(close=[1.0, 100.0, 99.0, 98.0, 97.0]),
        "funding_rate_weighted_ohlc": table(
            weighting=["oi", "volume", "oi", "volume", "volume"],
            close=[0.5, 0.9, 0.02, 0.9, 0.9],
        ),
        "liquidation_history": table(
            long_liquidation_usd=[9e9, 1, 2, 3, 4], short_liquidation_usd=[9e9, 0, 0, 1, 1]
        ),
    }
    evidence = evidence_from_tables(tables, bars=3)
    assert evidence.taker_buy_share_pct == pytest.approx(100 * 9 / 21)
    assert evidence.oi_change_pct == pytest.approx(100 * (97 / 100 - 1))
    assert evidence.funding_pct == 0.02
    assert (evidence.long_liquidation_usd, evidence.short_liquidation_usd) == (9, 2)
    assert evidence_from_tables({}, bars=3) == Evidence(None, None, None, None, None)
