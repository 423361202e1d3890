"""Alert text: one HTML digest per coin and evaluation, short lines for a phone screen.

Telegram's HTML mode is used because alert text is full of `.`, `-` and `+`, which MarkdownV2
reserves; in HTML only `<`, `>` and `&` need escaping, and every dynamic value goes through
`escape` (`cg_assets.telegram.markup`). Each line is complete HTML on its own (no tag spans a
line break), which is what lets `split_message` cut a long message on line boundaries without
breaking the markup. Lengths are counted like Telegram counts them: visible characters after
entity parsing, in UTF-16 units.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cg_assets.coinglass.plans import HOUR_MS, MINUTE_MS, interval_ms
from cg_assets.telegram.ledger import LEVEL_RANK, LEVELS
from cg_assets.telegram.markup import REPEAT_NOTICE_LENGTH, escape

MAX_MESSAGE_LENGTH = 4096  # telegram.constants.MessageLimit.MAX_TEXT_LENGTH
MAX_TITLE_LENGTH = 200
LEVEL_MARKERS = {"HIGH": "🔴", "MEDIUM": "🟠", "LOW": "🟡"}
FOOTER = "<i>Automated signal, not financial advice.</i>"

_TAG = re.compile(r"<[^<>]*>")


@dataclass(frozen=True)
class SignalLine:
    """A signal as the message shows it (the `signals` row's rule, level and title), with its
    rule's backtest record in one line (`record.record_line`; empty: not quoted)."""

    rule: str
    level: str
    title: str
    record: str = ""


def visible_length(text: str) -> int:
    """Characters Telegram counts against the 4096 limit: tags dropped, entities decoded."""
    plain = html.unescape(_TAG.sub("", text))
    return len(plain.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """`text` as few messages of at most `limit` visible characters, cut between lines."""
    parts: list[list[str]] = [[]]
    size = 0
    for line in text.split("\n"):
        length = visible_length(line)
        if length > limit:
            raise ValueError(f"a single line has {length} characters, over the limit of {limit}")
        needed = length + (1 if parts[-1] else 0)
        if size + needed > limit:
            parts.append([])
            size, needed = 0, length
        parts[-1].append(line)
        size += needed
    joined = ("\n".join(lines).strip("\n") for lines in parts)
    return [part for part in joined if part.strip()]


def render_digest(
    coin: str,
    snapshot: Mapping[str, Any],
    signals: Sequence[SignalLine],
    *,
    also_active: Sequence[SignalLine] = (),
    interval: str = "1h",
    limit: int = MAX_MESSAGE_LENGTH - REPEAT_NOTICE_LENGTH,
    notes: Sequence[str] = (),
) -> list[str]:
    """The message(s) for one coin: signals by level, the market snapshot, the footer.

    `snapshot` is a `market_snapshot` row (nulls allowed); `also_active` are signals that still
    hold but were alerted recently, listed by name only so they are not repeated; `notes` are
    lines of HTML about the delivery (e.g. digests the daily cap held back), shown above the
    footer. Each part leaves room for the possible-repeat notice a resend opens with.
    """
    if not signals:
        raise ValueError(f"no signals to render for {coin!r}")
    ordered = sorted(signals, key=lambda s: -LEVEL_RANK[s.level])
    counts = [
        f"{n} {level}"
        for level in reversed(LEVELS)
        if (n := sum(s.level == level for s in signals))
    ]
    lines = [
        f"{LEVEL_MARKERS[ordered[0].level]} <b>{escape(coin)}</b> · {' · '.join(counts)}",
        f"<i>{escape(interval)} bar {_when(snapshot.get('ts'))}</i>",
    ]
    for level in reversed(LEVELS):
        group = [s for s in ordered if s.level == level]
        if group:
            lines += ["", f"{LEVEL_MARKERS[level]} <b>{level}</b>"]
            for s in group:
                lines.append(f"• {escape(_title(s.title))}")
                if s.record:
                    lines.append(f"  <i>{escape(_title(s.record))}</i>")
    lines += ["", *snapshot_lines(snapshot, interval)]
    if also_active:
        names = ", ".join(escape(s.rule) for s in also_active)
        lines += ["", f"Also active, alerted earlier: {names}"]
    if notes:
        lines += ["", *notes]
    lines += ["", FOOTER]
    return split_message("\n".join(lines), limit)


def snapshot_lines(snapshot: Mapping[str, Any], interval: str = "1h") -> list[str]:
    """The market at the evaluated bar, one short line per gauge."""
    get = snapshot.get
    hour, day = (escape(label) for label in _spans(interval))
    lines = [
        "<b>Market</b>",
        f"Price {escape(fmt_price(get('price')))} ({escape(fmt_pct(get('price_change_pct')))})",
        f"Funding {escape(fmt_pct(get('funding_avg_8h_pct'), 3))} per 8h",
        f"OI {escape(fmt_usd(get('oi_usd')))} · {hour} {escape(fmt_pct(get('oi_change_1_pct')))}"
        f" · {day} {escape(fmt_pct(get('oi_change_24_pct')))}",
        f"Liquidations {hour}: longs {escape(fmt_usd(get('long_liq_usd')))}"
        f" · shorts {escape(fmt_usd(get('short_liq_usd')))}",
        f"Long %: retail {escape(fmt_num(get('retail_long_pct')))}"
        f" · top acct {escape(fmt_num(get('top_account_long_pct')))}"
        f" · top pos {escape(fmt_num(get('top_position_long_pct')))}",
        f"Taker buy share {hour}: {escape(fmt_num(get('taker_buy_share_pct')))}%",
    ]
    absent = [str(name) for name in get("absent_inputs") or ()]
    if absent:
        lines.append(f"⚠️ Sent without {escape(', '.join(absent))} (not in the lake for this bar)")
    missing = _missing(get("missing"))
    if missing:
        lines.append(f"⚠️ Missing: {escape(missing)}")
    return lines


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_num(value: Any, decimals: int = 1) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:,.{decimals}f}"


def fmt_pct(value: Any, decimals: int = 2) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:+.{decimals}f}%"


def fmt_price(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    if abs(number) >= 1000:
        return f"${number:,.0f}"
    if abs(number) >= 1:
        return f"${number:,.2f}"
    return f"${number:.4g}"


def fmt_usd(value: Any) -> str:
    """Compact dollars: $950, $52.1K, $12.3M, $4.56B."""
    number = _number(value)
    if number is None:
        return "n/a"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= threshold:
            return f"${number / threshold:.1f}{suffix}"
    return f"${number:,.0f}"


def _duration(ms: int) -> str:
    hours = ms / HOUR_MS
    if hours < 1:
        return f"{ms // MINUTE_MS}m"
    return f"{hours:g}h" if hours <= 48 else f"{hours / 24:g}d"


def _spans(interval: str) -> tuple[str, str]:
    """Labels of market_snapshot's two spans: "the last hour" (at least one bar) and 24 bars."""
    try:
        step = interval_ms(interval)
    except ValueError:
        return "last bar", "24 bars"
    return _duration(max(HOUR_MS, step)), _duration(24 * step)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return "at an unknown time" if value is None else escape(value)


def _title(title: str) -> str:
    flat = " ".join(str(title).split())
    if len(flat) <= MAX_TITLE_LENGTH:
        return flat
    return flat[: MAX_TITLE_LENGTH - 1] + "…"


def _missing(raw: Any) -> str:
    """`missing` is a JSON object {field: reason}; shown as "field (reason), ..."."""
    if raw in (None, "", "{}"):
        return ""
    try:
        fields = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return _title(str(raw))
    if not isinstance(fields, dict):
        return _title(str(raw))
    return _title(", ".join(f"{name} ({reason})" for name, reason in fields.items()))
