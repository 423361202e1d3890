"""Alert hygiene, as pure rules: when a HIGH condition is over, how many digests a coin may
send in a day, and what the daily heartbeat says.

All clear. A rule's HIGH episode for a coin opens with its first HIGH bar and ends once the
condition has *clearly* gone: `Exit.bars` consecutive bars (no missing bar between them) on
which the rule is not HIGH and, for a numeric rule, its metric is at or below an exit
threshold below the HIGH cut (hysteresis: a metric hovering around the cut re-enters HIGH
without ever clearing, so a flip-flopping series gives one episode, not a HIGH/all-clear pair
per flip). Rules without a metric (heatmap zone, confluence) clear on the level alone, over
more bars. A bar whose metric is unknown (an input missing) is not clear: silence is not
evidence. The HIGH cut is the one the signal's evidence recorded at the episode's last HIGH
bar (adaptive thresholds move it per coin); evidence without one falls back to the level.

Daily cap. At most `cap` digests of one coin go out per UTC day; the next ones are recorded
as suppressed with `CAP_REASON`. A digest that may have reached the chat counts (sent, in
flight, or of unknown delivery), one that surely did not (failed, suppressed) does not.

Nothing here imports Dagster or touches the ledger: callers pass ledger records in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cg_assets.alerts.keys import DIGEST_PREFIX, kind
from cg_assets.alerts.messages import fmt_pct, fmt_usd
from cg_assets.signals.rules import METRICS, Snapshot
from cg_assets.telegram.delivery import CAP_SETTING
from cg_assets.telegram.ledger import AlertRecord
from cg_assets.telegram.markup import escape

HIGH = "HIGH"
CAP_REASON = "suppressed: daily cap"
HEARTBEAT_SPAN = timedelta(hours=24)
# Ledger kinds that are market alerts (the heartbeat's "N alerts"); ops messages are not.
MARKET_KINDS = {
    "digest": "digests",
    "allclear": "all clears",
    "headsup": "heads-ups",
    "verdict": "verdicts",
}
COUNTED = ("pending", "sending", "sent", "unknown")


# ---------------------------------------------------------------------------- all clear


@dataclass(frozen=True)
class Exit:
    """When a rule's HIGH episode has ended: `bars` consecutive clear bars; with `scale` or
    `points`, a clear bar also has its metric at or below `cut * scale` or `cut - points`."""

    bars: int
    scale: float | None = None
    points: float | None = None

    def __post_init__(self) -> None:
        if self.bars < 1:
            raise ValueError(f"bars={self.bars!r}: an exit needs at least 1 clear bar")
        if self.scale is not None and self.points is not None:
            raise ValueError("an exit is either scaled or in points, not both")
        if self.scale is not None and not 0 < self.scale < 1:
            raise ValueError(f"scale={self.scale!r}: must be between 0 and 1")
        if self.points is not None and not self.points > 0:
            raise ValueError(f"points={self.points!r}: must be above 0")

    def threshold(self, cut: float | None) -> float | None:
        """The exit threshold below the HIGH `cut`; None: judged on the level alone."""
        if cut is None or not math.isfinite(cut):
            return None
        if self.scale is not None:
            return cut * self.scale
        if self.points is not None:
            return cut - self.points
        return None


# Per rule: funding must fall to 80 % of its HIGH cut (0.10 % -> 0.08 %), an OI move to 60 %
# (5 % -> 3 %), a liquidation flush to half ($50M -> $25M), shares and gaps 3 points below
# (retail 65 % -> 62 %, smart-money gap 10 -> 7 points), each for 2 bars; zone and confluence,
# which have no single metric, must stay below HIGH for 3 bars.
EXITS: Mapping[str, Exit] = {
    "funding": Exit(2, scale=0.8),
    "oi_change": Exit(2, scale=0.6),
    "liquidations": Exit(2, scale=0.5),
    "retail_positioning": Exit(2, points=3.0),
    "smart_money": Exit(2, points=3.0),
    "taker_flow": Exit(2, points=3.0),
    "heatmap_zone": Exit(3),
    "confluence": Exit(3),
}
DEFAULT_EXIT = Exit(3)


@dataclass(frozen=True)
class BarState:
    """One evaluated bar of a coin, as one rule saw it: its level (None: did not fire), its
    metric's value (None: unknown) and, when HIGH, the HIGH cut its evidence recorded."""

    ts: datetime
    level: str | None
    value: float | None = None
    cut: float | None = None
    metric: str | None = None


@dataclass(frozen=True)
class Episode:
    """A HIGH episode that has ended: its HIGH bars, the bar that completed the exit, the
    exit threshold it was judged by (None: the level alone), and the metric and its value
    there."""

    rule: str
    high_bars: tuple[datetime, ...]
    ended_at: datetime
    exit: Exit
    threshold: float | None
    metric: str | None
    value: float | None

    @property
    def first_high(self) -> datetime:
        return self.high_bars[0]

    @property
    def last_high(self) -> datetime:
        return self.high_bars[-1]


def ended_episodes(
    rule: str, bars: Sequence[BarState], interval: timedelta, exit: Exit | None = None
) -> list[Episode]:
    """The HIGH episodes of one coin's `rule` that ended within `bars` (any order); an
    episode still open at the last bar is not listed."""
    exit = exit or EXITS.get(rule, DEFAULT_EXIT)
    episodes: list[Episode] = []
    highs: list[datetime] = []
    cut: float | None = None
    metric: str | None = None
    clear = 0
    previous: datetime | None = None
    for bar in sorted(bars, key=lambda b: b.ts):
        contiguous = previous is not None and bar.ts - previous == interval
        previous = bar.ts
        if bar.level == HIGH:
            highs.append(bar.ts)
            if bar.cut is not None:
                cut, metric = bar.cut, bar.metric
            clear = 0
            continue
        if not highs:
            continue
        threshold = exit.threshold(cut)
        clear = (clear if contiguous else 0) + 1 if _is_clear(bar, threshold) else 0
        if clear >= exit.bars:
            judged = metric if threshold is not None else None
            episodes.append(Episode(rule, tuple(highs), bar.ts, exit, threshold, judged, bar.value))
            highs, cut, metric, clear = [], None, None, 0
    return episodes


def _is_clear(bar: BarState, threshold: float | None) -> bool:
    if threshold is None:
        return True
    return bar.value is not None and bar.value <= threshold


def high_cut(evidence: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(metric, HIGH cut) from a signal's evidence; (None, None) where it records neither."""
    cuts = evidence.get("cuts")
    metric = evidence.get("metric")
    if not isinstance(cuts, Mapping) or not isinstance(metric, str):
        return None, None
    cut = cuts.get(HIGH)
    return (metric, float(cut)) if isinstance(cut, int | float) else (None, None)


def find_ended(
    snapshots: Sequence[Mapping[str, Any]],
    signals: Sequence[Mapping[str, Any]],
    interval: timedelta,
) -> list[tuple[str, Episode]]:
    """(coin, episode) for every ended HIGH episode in `market_snapshot` rows and the
    `signals` rows (symbol, ts, rule, level, evidence as JSON) of the same bars. Each bar's
    metric is computed from its snapshot the way the rule computes it (`rules.METRICS`), the
    metric being the one the latest HIGH signal's evidence names."""
    fired = {(s["symbol"], s["ts"], s["rule"]): s for s in signals}
    snapshots_of: dict[str, list[Snapshot]] = {}
    for row in snapshots:
        snapshots_of.setdefault(row["symbol"], []).append(Snapshot.from_row(row))
    ended: list[tuple[str, Episode]] = []
    for coin, rule in sorted({(s["symbol"], s["rule"]) for s in signals if s["level"] == HIGH}):
        states: list[BarState] = []
        metric: str | None = None
        for snapshot in snapshots_of.get(coin, []):
            signal = fired.get((coin, snapshot.ts, rule))
            level = signal["level"] if signal else None
            cut = None
            if level == HIGH:
                named, cut = high_cut(_evidence(signal["evidence"]))
                metric = named or metric
            value = METRICS[metric](snapshot) if metric in METRICS else None
            states.append(BarState(snapshot.ts, level, value, cut, metric))
        ended += [(coin, episode) for episode in ended_episodes(rule, states, interval)]
    return ended


def _evidence(raw: object) -> Mapping[str, Any]:
    try:
        evidence = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return evidence if isinstance(evidence, Mapping) else {}


def reply_target(
    coin: str, episode: Episode, records: Iterable[AlertRecord], bar_of: Mapping[str, datetime]
) -> int | None:
    """The message an all clear replies to: the first digest of `coin` sent at one of the
    episode's HIGH bars and carrying its rule (None: nobody was told, so no all clear).
    `bar_of` maps each digest key to its bar."""
    highs = set(episode.high_bars)
    sent = [
        r
        for r in records
        if r.coin == coin
        and r.status == "sent"
        and r.message_id is not None
        and episode.rule in r.rules
        and bar_of.get(r.key) in highs
    ]
    return min(sent, key=lambda r: bar_of[r.key]).message_id if sent else None


def all_clear_text(coin: str, episode: Episode) -> str:
    """The reply: which condition ended, since when, and by what measure."""
    highs = episode.high_bars
    same_day = highs[-1].date() == highs[0].date()
    span = f"{highs[0]:%Y-%m-%d %H:%M} to {highs[-1]:{'%H:%M' if same_day else '%m-%d %H:%M'}}"
    bars = episode.exit.bars
    metric = episode.metric
    if episode.threshold is None or metric is None:
        measure = f"not HIGH for {bars} bars"
    else:
        measure = (
            f"{metric} {fmt_metric(metric, episode.value)}, at or below the exit"
            f" {fmt_metric(metric, episode.threshold)} for {bars} bars"
        )
    return "\n".join(
        [
            f"✅ <b>{escape(coin)}</b> · {escape(episode.rule)} all clear",
            escape(f"HIGH {span} UTC ({len(highs)} HIGH bars) has ended:"),
            escape(f"{measure} (to the {episode.ended_at:%H:%M} UTC bar)"),
        ]
    )


def fmt_metric(metric: str, value: float | None) -> str:
    """A rule metric in its unit: percent, dollars or points."""
    if value is None:
        return "n/a"
    if metric == "funding":
        return fmt_pct(value, 3).lstrip("+")
    if metric == "oi_change":
        return fmt_pct(value).lstrip("+")
    if metric.endswith("_liq"):
        return fmt_usd(value)
    if metric in ("retail_long", "retail_short"):
        return f"{value:.1f}%"
    return f"{value:.1f} pts"


# ---------------------------------------------------------------------------- daily cap


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day: where a coin's daily count restarts."""
    return datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC)


def counts_toward_cap(record: AlertRecord) -> bool:
    """Whether a ledger row may have put a message in the chat."""
    return record.status in COUNTED or record.unconfirmed > 0


def digests_counted(records: Iterable[AlertRecord], coin: str, key: str) -> int:
    """Digests of `coin` among `records` that count toward its cap, other than `key`'s."""
    return sum(
        r.coin == coin and r.key.startswith(DIGEST_PREFIX) and r.key != key and counts_toward_cap(r)
        for r in records
    )


def cap_reason(coin: str, counted: int, cap: int) -> str:
    """Why a digest of `coin` is not sent given `counted` digests today ('' = send); a cap
    of 0 is no cap."""
    if cap <= 0 or counted < cap:
        return ""
    return f"{CAP_REASON}: {counted} digests of {coin} today (UTC), {CAP_SETTING}={cap}"


def is_capped(record: AlertRecord) -> bool:
    return record.status == "suppressed" and record.error.startswith(CAP_REASON)


def capped_since_last_sent(records: Sequence[AlertRecord], coin: str) -> int:
    """Digests of `coin` held back by the cap after its last digest that went out (records
    oldest first): what the next allowed digest reports."""
    count = 0
    for record in records:
        if record.coin != coin or not record.key.startswith(DIGEST_PREFIX):
            continue
        if is_capped(record):
            count += 1
        elif counts_toward_cap(record):
            count = 0
    return count


def capped_note(coin: str, count: int, cap: int) -> str:
    """The line the next allowed digest carries ('' when nothing was held back)."""
    if not count:
        return ""
    digests = "digest" if count == 1 else "digests"
    return escape(
        f"⚠️ {count} earlier {digests} of {coin} not sent: daily cap of {cap}"
        f" reached ({CAP_SETTING})"
    )


def capped_by_coin(records: Iterable[AlertRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if is_capped(record):
            counts[record.coin] = counts.get(record.coin, 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------- heartbeat


@dataclass(frozen=True)
class Activity:
    """What the ledger saw over the heartbeat's span."""

    sent: Mapping[str, int]  # market alerts sent, by kind
    capped: Mapping[str, int]  # digests held back by the daily cap, by coin
    undelivered: int  # market alerts that failed or are of unknown delivery

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def activity(records: Iterable[AlertRecord]) -> Activity:
    market = [r for r in records if kind(r.key) in MARKET_KINDS]
    sent: dict[str, int] = {}
    for record in market:
        if record.status == "sent":
            sent[kind(record.key)] = sent.get(kind(record.key), 0) + 1
    undelivered = sum(r.status in ("failed", "unknown") for r in market)
    return Activity(sent, capped_by_coin(market), undelivered)


def heartbeat_text(now: datetime, seen: Activity, sidecar: str) -> str:
    """'running; N alerts in the last 24 h; sidecar up' as a short message."""
    parts = [
        f"{n} {MARKET_KINDS[k] if n != 1 else MARKET_KINDS[k].removesuffix('s')}"
        for k in MARKET_KINDS
        if (n := seen.sent.get(k, 0))
    ]
    alerts = "alert" if seen.total == 1 else "alerts"
    lines = [
        f"💓 <b>cg-pipeline running</b> · {now:%Y-%m-%d %H:%M} UTC",
        escape(
            f"last 24 h: {seen.total} {alerts} sent" + (f" ({', '.join(parts)})" if parts else "")
        ),
    ]
    if seen.capped:
        by_coin = ", ".join(f"{coin} {n}" for coin, n in seen.capped.items())
        lines.append(escape(f"held back by the daily cap: {sum(seen.capped.values())} ({by_coin})"))
    if seen.undelivered:
        lines.append(escape(f"not delivered: {seen.undelivered} (see the alert ledger)"))
    lines.append(escape(f"sidecar: {sidecar}"))
    return "\n".join(lines)
