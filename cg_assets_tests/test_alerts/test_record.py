"""Every alert quotes its rule's record in one line."""

from __future__ import annotations

from datetime import UTC, datetime

from cg_assets.alerts.assets import quote
from cg_assets.alerts.messages import SignalLine, render_digest
from cg_assets.alerts.record import record_line

ROW = {
    "rule": "funding",
    "level": "HIGH",
    "symbol": "BTC",
    "horizon": "4h",
    "side": "down",
    "n": 112,
    "hit_rate": 0.6116,
    "baseline_hit_rate": 0.49,
    "q_value": 0.031,
}


def test_a_tested_cell_reads_as_one_line():
    assert record_line("funding", "HIGH", "BTC", ROW) == (
        "funding HIGH, BTC: 4 h later price was lower 61 % of 112 times (baseline 49 %, q 0.03)"
    )


def test_context_rules_and_tiny_q_values():
    row = {**ROW, "rule": "oi_change", "side": "none", "q_value": 0.0004}
    assert record_line("oi_change", "HIGH", "BTC", row) == (
        "oi_change HIGH, BTC: 4 h later price moved more than usual 61 % of 112 times"
        " (baseline 49 %, q < 0.01)"
    )


def test_too_little_history_says_so_with_n():
    assert record_line("funding", "HIGH", "BTC", {**ROW, "n": 7, "q_value": None}) == (
        "funding HIGH, BTC: not enough history yet (n = 7)"
    )
    assert record_line("funding", "HIGH", "SOL", None) == (
        "funding HIGH, SOL: not enough history yet (n = 0)"
    )


def test_a_signal_quotes_the_cell_of_the_side_it_predicts():
    records = {("funding", "HIGH", "BTC", "down"): ROW, ("funding", "HIGH", "BTC", "up"): None}
    positive = {"rule": "funding", "level": "HIGH", "symbol": "BTC"}
    line = quote({**positive, "evidence": '{"funding_avg_8h_pct": 0.12}'}, records)
    assert line.startswith("funding HIGH, BTC: 4 h later price was lower 61 %")
    negative = quote({**positive, "evidence": '{"funding_avg_8h_pct": -0.08}'}, records)
    assert negative == "funding HIGH, BTC: not enough history yet (n = 0)"


def test_the_digest_shows_the_record_under_its_signal():
    line = SignalLine(
        "funding", "HIGH", "Funding +0.1200% per 8h", record_line("funding", "HIGH", "BTC", ROW)
    )
    [text] = render_digest("BTC", {"ts": datetime(2026, 1, 1, tzinfo=UTC)}, [line])
    lines = text.split("\n")
    at = lines.index("• Funding +0.1200% per 8h")
    assert lines[at + 1] == (
        "  <i>funding HIGH, BTC: 4 h later price was lower 61 % of 112 times"
        " (baseline 49 %, q 0.03)</i>"
    )
