"""Digest formatting: escaping, grouping, nulls, and the 4096-character split on line bounds.

Validity is judged by the Telegram stand-in's parser, which is written independently from the
formatter, the way Telegram would judge it.
"""

from __future__ import annotations

import pytest

from cg_assets.alerts.messages import (
    FOOTER,
    SignalLine,
    fmt_pct,
    fmt_price,
    fmt_usd,
    render_digest,
    split_message,
    visible_length,
)
from cg_assets.sim.telegram_html import parse_html, utf16_len
from cg_assets.telegram.markup import escape, flag_repeat
from cg_assets_tests.test_alerts.conftest import BAR, snapshot_row

SIGNALS = [
    SignalLine("taker_flow", "MEDIUM", "Takers buying: 67% of volume"),
    SignalLine("funding", "HIGH", "Funding +0.12% per 8h: longs crowded"),
    SignalLine("retail_positioning", "LOW", "Retail 61% long"),
    SignalLine("oi_change", "HIGH", "OI +5.4% in 1h"),
]


def test_escape_covers_the_three_reserved_characters():
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert escape('"quotes" stay') == '"quotes" stay'
    assert escape(0.5) == "0.5"


def test_hostile_values_are_escaped_everywhere_and_parse_as_telegram_html():
    snapshot = snapshot_row(
        "BTC", BAR, missing='{"funding_avg_8h_pct": "<no data> & OKX down"}', price=None
    )
    signals = [SignalLine("funding", "HIGH", "Funding <b>extreme</b> & rising > 0.1%")]
    [text] = render_digest("B<T>C&", snapshot, signals, also_active=[SignalLine("x<y", "LOW", "")])
    parsed = parse_html(text)  # raises if anything is left unescaped
    assert "B<T>C&" in parsed.plain
    assert "• Funding <b>extreme</b> & rising > 0.1%" in parsed.plain
    assert "<no data> & OKX down" in parsed.plain
    assert "Also active, alerted earlier: x<y" in parsed.plain
    assert "Price n/a" in parsed.plain
    assert {e["type"] for e in parsed.entities} == {"bold", "italic"}


def test_digest_groups_signals_by_level_highest_first_and_ends_with_the_footer():
    [text] = render_digest("BTC", snapshot_row("BTC", BAR), SIGNALS)
    plain = parse_html(text).plain
    lines = plain.splitlines()
    assert lines[0] == "🔴 BTC · 2 HIGH · 1 MEDIUM · 1 LOW"
    assert lines[1] == "1h bar 2026-03-01 11:00 UTC"
    order = [lines.index(h) for h in ("🔴 HIGH", "🟠 MEDIUM", "🟡 LOW", "Market")]
    assert order == sorted(order)
    high = lines[order[0] + 1 : order[1] - 1]
    assert high == ["• Funding +0.12% per 8h: longs crowded", "• OI +5.4% in 1h"]
    assert "Price $93,405 (+1.20%)" in lines
    assert "OI $12.3B · 1h +5.40% · 24h -2.10%" in lines
    assert "Liquidations 1h: longs $52.1M · shorts $3.2M" in lines
    assert "Taker buy share 1h: 67.0%" in lines
    assert "Long %: retail 68.2 · top acct 55.0 · top pos n/a" in lines
    assert text.endswith(FOOTER)
    assert "not financial advice" in lines[-1]
    assert max(len(line) for line in lines) <= 60  # short lines for a phone


@pytest.mark.parametrize(
    ("interval", "hour", "day"),
    [("1h", "1h", "24h"), ("15m", "1h", "6h"), ("4h", "4h", "4d"), ("1d", "24h", "24d")],
)
def test_interval_names_the_spans(interval, hour, day):
    [text] = render_digest("ETH", snapshot_row("ETH", BAR), SIGNALS[:1], interval=interval)
    plain = parse_html(text).plain
    assert f"OI $12.3B · {hour} +5.40% · {day} -2.10%" in plain
    assert f"Liquidations {hour}: longs" in plain


def test_number_formats():
    assert [fmt_usd(v) for v in (950, 52_100, 12.3e6, 4.561e9, None, float("nan"))] == [
        "$950",
        "$52.1K",
        "$12.3M",
        "$4.6B",
        "n/a",
        "n/a",
    ]
    assert [fmt_price(v) for v in (93_405.2, 3.14159, 0.000123)] == [
        "$93,405",
        "$3.14",
        "$0.000123",
    ]
    assert (fmt_pct(-0.05, 3), fmt_pct(2), fmt_pct("x")) == ("-0.050%", "+2.00%", "n/a")


def test_visible_length_counts_like_telegram():
    for html in ("<b>a&amp;b</b>", "🔴 <i>x</i>", "plain", "&lt;&gt;&quot;"):
        assert visible_length(html) == utf16_len(parse_html(html).plain)


def test_split_cuts_on_line_boundaries_within_the_limit():
    lines = [f"<b>{i:03d}</b> {'&amp;' * 7}" for i in range(40)]  # 11 visible chars each
    text = "\n".join(lines)
    parts = split_message(text, limit=50)
    assert len(parts) > 1
    assert all(visible_length(p) <= 50 for p in parts)
    assert [line for p in parts for line in p.split("\n")] == lines  # nothing lost or cut
    for part in parts:
        parse_html(part)
    assert split_message(text) == [text]


def test_split_drops_blank_edges_and_rejects_an_overlong_line():
    assert split_message("a\n\n\nb", limit=1) == ["a", "b"]
    with pytest.raises(ValueError, match="5 characters, over the limit of 4"):
        split_message("ok\n&amp;bcde", limit=4)


def test_a_huge_digest_is_split_into_valid_messages_under_4096():
    many = [SignalLine(f"rule{i}", "MEDIUM", f"Signal {i} <{'x' * 300}>") for i in range(40)]
    parts = render_digest("SOL", snapshot_row("SOL", BAR), many)
    assert len(parts) >= 3
    for part in parts:  # also when a resend opens it with the possible-repeat notice
        assert utf16_len(parse_html(flag_repeat(part)).plain) <= 4096
    titles = [line for p in parts for line in parse_html(p).plain.splitlines() if "Signal" in line]
    assert len(titles) == 40
    assert all(line.endswith("…") and len(line) <= 202 for line in titles)  # titles truncated
    assert parts[-1].endswith(FOOTER)


def test_no_signals_is_an_error():
    with pytest.raises(ValueError, match="no signals to render for 'BTC'"):
        render_digest("BTC", snapshot_row("BTC", BAR), [])
