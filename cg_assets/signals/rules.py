"""The signal rules: plain values and a thresholds object in, findings out.

Nothing here imports Dagster or DuckDB. The `signals` asset applies these functions to the rows
of `market_snapshot`, and the liquidation heads-up flow applies the same functions to values it
fetched over REST a few seconds earlier, so both paths judge the market by one set of rules.

Every rule compares a magnitude against fixed floors (the thresholds from the product's source
documents). With enough history, the floors are raised per coin by the coin's own rolling
percentiles (p85 / p95 / p99 → LOW / MEDIUM / HIGH), so what is routine for a volatile coin is
graded down; the percentiles never lower a threshold below its floor, and a rule never reaches
a level its fixed thresholds cannot give (taker flow stays at most MEDIUM).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any

from cg_assets.signals.percentiles import NO_SAMPLES, Percentiles, level_cuts


class Level(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @property
    def rank(self) -> int:
        return LEVELS.index(self)

    def raised(self) -> Level:
        """One step up; HIGH stays HIGH."""
        return LEVELS[min(self.rank + 1, len(LEVELS) - 1)]


LEVELS: tuple[Level, ...] = (Level.LOW, Level.MEDIUM, Level.HIGH)


class Rule(StrEnum):
    FUNDING = "funding"
    OI_CHANGE = "oi_change"
    LIQUIDATIONS = "liquidations"
    RETAIL_POSITIONING = "retail_positioning"
    SMART_MONEY = "smart_money"
    TAKER_FLOW = "taker_flow"
    HEATMAP_ZONE = "heatmap_zone"
    CONFLUENCE = "confluence"


class Side(IntEnum):
    """What a rule predicts for the price after its signal; NONE: context only, scored by the
    size of the move (volatility) instead of its sign."""

    DOWN = -1
    NONE = 0
    UP = 1

    @property
    def word(self) -> str:
        return {Side.DOWN: "down", Side.NONE: "none", Side.UP: "up"}[self]


@dataclass(frozen=True)
class Hypothesis:
    """The claim a rule makes about what follows it, and the side it predicts for one signal
    (from the signal's evidence), so the backtest scores every rule against its own claim."""

    claim: str
    side: Callable[[Mapping[str, Any]], Side]


def _sign(value: float, positive: Side) -> Side:
    return positive if value >= 0 else Side(-positive)


def _liquidation_side(evidence: Mapping[str, Any]) -> Side:
    # A one-sided flush exhausts the forced sellers (buyers): price bounces the other way.
    return {"long": Side.UP, "short": Side.DOWN}.get(evidence.get("kind", ""), Side.NONE)


HYPOTHESES: dict[Rule, Hypothesis] = {
    Rule.FUNDING: Hypothesis(
        "funding > 0: crowded longs pay to hold, price falls; < 0: crowded shorts, price rises",
        lambda e: _sign(e["funding_avg_8h_pct"], Side.DOWN),
    ),
    Rule.OI_CHANGE: Hypothesis(
        "none (context): leverage opening or closing fast precedes a larger move, either way",
        lambda e: Side.NONE,
    ),
    Rule.LIQUIDATIONS: Hypothesis(
        "long cascade: forced selling exhausted, price bounces up; short squeeze: falls back;"
        " heavy two-sided liquidations: none (context, a larger move)",
        _liquidation_side,
    ),
    Rule.RETAIL_POSITIONING: Hypothesis(
        "contrarian: retail crowded long, price falls; crowded short, price rises",
        lambda e: _sign(e["retail_long_pct"] - 50, Side.DOWN),
    ),
    Rule.SMART_MONEY: Hypothesis(
        "follow the top traders: price moves the way they lean against retail",
        lambda e: _sign(e["top_account_long_pct"] - e["retail_long_pct"], Side.UP),
    ),
    Rule.TAKER_FLOW: Hypothesis(
        "continuation: aggressive buying, price rises; aggressive selling, price falls",
        lambda e: _sign(e["taker_buy_share_pct"] - 50, Side.UP),
    ),
    Rule.HEATMAP_ZONE: Hypothesis(
        "magnet: price is drawn to the liquidity zone (down to a zone below, up to one above)",
        lambda e: Side.DOWN if e["side"] == "below" else Side.UP,
    ),
    Rule.CONFLUENCE: Hypothesis(
        "none (context): several independent rules at once precede a larger move, either way",
        lambda e: Side.NONE,
    ),
}


def predicted_side(rule: str, evidence: Mapping[str, Any]) -> Side:
    """The side a signal of `rule` with this evidence predicts (its rule's hypothesis);
    ValueError names the rule and the evidence field it lacks."""
    try:
        return HYPOTHESES[Rule(rule)].side(evidence)
    except KeyError as exc:
        raise ValueError(f"rule={rule!r}: evidence has no {exc.args[0]!r} field") from None


# Rules reading the same input are one piece of evidence for confluence, not two: retail
# positioning and smart-money divergence both rest on the retail long share.
EVIDENCE_GROUP: dict[Rule, str] = {
    Rule.FUNDING: "funding",
    Rule.OI_CHANGE: "open_interest",
    Rule.LIQUIDATIONS: "liquidations",
    Rule.RETAIL_POSITIONING: "positioning",
    Rule.SMART_MONEY: "positioning",
    Rule.TAKER_FLOW: "taker_flow",
    Rule.HEATMAP_ZONE: "heatmap",
}


class ThresholdsError(ValueError):
    """One or more thresholds are invalid; the message names each field and value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid signal thresholds:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Thresholds:
    """Every number the rules compare against; defaults are the product's documented values."""

    funding_high_pct: float = 0.10  # average funding per 8 h above this: HIGH
    funding_negative_high_pct: float = -0.05  # below this: HIGH
    funding_medium_abs_pct: float = 0.06  # |average| above this: MEDIUM
    oi_change_high_pct: float = 5.0  # |OI change over 1 h| above this: HIGH
    oi_change_medium_pct: float = 2.5
    liq_long_high_usd: float = 50_000_000.0  # longs liquidated in the last hour: HIGH
    liq_short_high_usd: float = 50_000_000.0
    liq_total_medium_usd: float = 25_000_000.0
    retail_long_high_pct: float = 65.0  # global-account long share above this: HIGH
    retail_short_medium_pct: float = 60.0  # global-account short share above this: MEDIUM
    smart_money_gap_pts: float = 10.0  # |top-trader long % - retail long %| at least: HIGH
    taker_buy_high_pct: float = 65.0  # taker buy share above this: MEDIUM
    taker_buy_low_pct: float = 35.0  # taker buy share below this: MEDIUM
    heatmap_min_score: float = 0.75
    heatmap_zone_level: str = "MEDIUM"
    confluence_min_rules: int = 3
    adaptive: bool = True
    adaptive_window_days: int = 30
    adaptive_min_samples: int = 168  # one week of hourly snapshots

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)!r}: {why}" for name, why in _threshold_problems(self)
        ]
        if problems:
            raise ThresholdsError(problems)


def _threshold_problems(t: Thresholds) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []

    def need(ok: bool, name: str, why: str) -> None:
        if not ok:
            problems.append((name, why))

    for f in fields(t):
        value = getattr(t, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append((f.name, "must be a finite number"))
    if problems:
        return problems
    need(t.funding_high_pct > 0, "funding_high_pct", "must be above 0 (percent per 8 h)")
    need(t.funding_negative_high_pct < 0, "funding_negative_high_pct", "must be below 0")
    need(
        0 < t.funding_medium_abs_pct < t.funding_high_pct,
        "funding_medium_abs_pct",
        f"must be above 0 and below funding_high_pct={t.funding_high_pct}",
    )
    need(t.oi_change_high_pct > 0, "oi_change_high_pct", "must be above 0")
    need(
        0 < t.oi_change_medium_pct < t.oi_change_high_pct,
        "oi_change_medium_pct",
        f"must be above 0 and below oi_change_high_pct={t.oi_change_high_pct}",
    )
    for name in ("liq_long_high_usd", "liq_short_high_usd", "liq_total_medium_usd"):
        need(getattr(t, name) > 0, name, "must be above 0 USD")
    for name in ("retail_long_high_pct", "retail_short_medium_pct"):
        need(0 < getattr(t, name) < 100, name, "must be a percentage between 0 and 100")
    need(0 < t.smart_money_gap_pts <= 100, "smart_money_gap_pts", "must be in (0, 100] points")
    need(50 < t.taker_buy_high_pct < 100, "taker_buy_high_pct", "must be between 50 and 100")
    need(0 < t.taker_buy_low_pct < 50, "taker_buy_low_pct", "must be between 0 and 50")
    need(0 <= t.heatmap_min_score <= 1, "heatmap_min_score", "must be a score in [0, 1]")
    need(
        t.heatmap_zone_level in LEVELS,
        "heatmap_zone_level",
        f"must be one of {', '.join(LEVELS)}",
    )
    groups = len(set(EVIDENCE_GROUP.values()))
    need(
        2 <= t.confluence_min_rules <= groups,
        "confluence_min_rules",
        f"must be between 2 and {groups} (the number of independent rule groups)",
    )
    need(t.adaptive_window_days >= 1, "adaptive_window_days", "must be at least 1 day")
    need(t.adaptive_min_samples >= 1, "adaptive_min_samples", "must be at least 1")
    return problems


@dataclass(frozen=True)
class Snapshot:
    """One coin at one bar: the columns of `market_snapshot`; None means missing (see `missing`)."""

    ts: datetime
    symbol: str
    funding_avg_8h_pct: float | None = None
    oi_usd: float | None = None
    oi_change_1_pct: float | None = None
    oi_change_24_pct: float | None = None
    long_liq_usd: float | None = None
    short_liq_usd: float | None = None
    retail_long_pct: float | None = None
    top_account_long_pct: float | None = None
    top_position_long_pct: float | None = None
    taker_buy_share_pct: float | None = None
    price: float | None = None
    price_change_pct: float | None = None
    absent_inputs: tuple[str, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Snapshot:
        """From a lake row (`missing` as its JSON string); other keys (the hive `date`) ignored."""
        values = {f.name: row.get(f.name) for f in fields(cls)}
        missing = values["missing"]
        values["missing"] = json.loads(missing) if isinstance(missing, str) else dict(missing or {})
        values["absent_inputs"] = tuple(values["absent_inputs"] or ())
        return cls(**values)


@dataclass(frozen=True)
class Zone:
    """One composite-heatmap price bucket."""

    price_low: float
    price_high: float
    score: float

    @property
    def mid(self) -> float:
        return (self.price_low + self.price_high) / 2


@dataclass(frozen=True)
class Finding:
    """What a rule concluded, before it is placed at a coin and a time."""

    rule: Rule
    level: Level
    title: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Signal:
    """A row of the `signals` asset."""

    ts: datetime
    symbol: str
    rule: Rule
    level: Level
    title: str
    evidence: dict[str, Any]
    signal_id: str

    @classmethod
    def at(cls, ts: datetime, symbol: str, finding: Finding) -> Signal:
        return cls(
            ts=ts,
            symbol=symbol,
            rule=finding.rule,
            level=finding.level,
            title=finding.title,
            evidence=finding.evidence,
            signal_id=signal_id(ts, symbol, finding.rule),
        )

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(
            rule=str(self.rule),
            level=str(self.level),
            evidence=json.dumps(self.evidence, sort_keys=True, allow_nan=False),
        )
        return row


def signal_id(ts: datetime, symbol: str, rule: str) -> str:
    """Stable across re-runs, so the alert ledger recognises a signal it has seen before."""
    key = f"{int(ts.timestamp() * 1000)}|{symbol}|{rule}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


Adaptive = Mapping[str, Percentiles]
NO_HISTORY: Adaptive = MappingProxyType({})

# The magnitude each rule grades, per metric; the rolling percentiles are taken over the same
# functions of the snapshot history, so a rule and its percentiles cannot drift apart.
METRICS: dict[str, Callable[[Snapshot], float | None]] = {
    "funding": lambda s: _abs(s.funding_avg_8h_pct),
    "oi_change": lambda s: _abs(s.oi_change_1_pct),
    "long_liq": lambda s: s.long_liq_usd,
    "short_liq": lambda s: s.short_liq_usd,
    "total_liq": lambda s: _sum(s.long_liq_usd, s.short_liq_usd),
    "retail_long": lambda s: s.retail_long_pct,
    "retail_short": lambda s: None if s.retail_long_pct is None else 100 - s.retail_long_pct,
    "smart_money": lambda s: _gap(s.top_account_long_pct, s.retail_long_pct),
    "taker_flow": lambda s: (
        None if s.taker_buy_share_pct is None else abs(s.taker_buy_share_pct - 50)
    ),
}


def _abs(value: float | None) -> float | None:
    return None if value is None else abs(value)


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else abs(a - b)


@dataclass(frozen=True)
class _Grade:
    level: Level | None
    evidence: dict[str, Any]


def grade(
    metric: str,
    value: float,
    floors: Mapping[Level, float],
    t: Thresholds,
    adaptive: Adaptive,
    inclusive: bool = False,
) -> _Grade:
    """The level `value` reaches: the highest whose cut it exceeds (or meets, if inclusive)."""
    cuts, origin = level_cuts(
        floors,
        adaptive.get(metric, NO_SAMPLES) if t.adaptive else None,
        t.adaptive_min_samples,
        t.adaptive_window_days,
    )
    level = next(
        (
            lv
            for lv in reversed(LEVELS)
            if math.isfinite(cuts[lv]) and (value >= cuts[lv] if inclusive else value > cuts[lv])
        ),
        None,
    )
    evidence = {
        "metric": metric,
        "value": value,
        "cuts": {str(lv): cuts[lv] for lv in LEVELS if math.isfinite(cuts[lv])},
        **origin,
    }
    return _Grade(level, evidence)


def _strongest(*grades: tuple[str, _Grade]) -> tuple[str, _Grade] | None:
    """The grade reaching the highest level (the first listed on a tie), None if none fired."""
    ranked = [
        (g.level.rank, -i, name, g) for i, (name, g) in enumerate(grades) if g.level is not None
    ]
    if not ranked:
        return None
    _, _, name, g = max(ranked)
    return name, g


def _money(usd: float) -> str:
    return f"${usd / 1e6:,.1f}M"


def funding_rule(
    avg_8h_pct: float, t: Thresholds, adaptive: Adaptive = NO_HISTORY
) -> Finding | None:
    """Funding averaged over the exchanges, per 8 h; the sign says who pays."""
    if avg_8h_pct >= 0:
        floors = {Level.HIGH: t.funding_high_pct, Level.MEDIUM: t.funding_medium_abs_pct}
    else:
        floors = {Level.HIGH: -t.funding_negative_high_pct, Level.MEDIUM: t.funding_medium_abs_pct}
    g = grade("funding", abs(avg_8h_pct), floors, t, adaptive)
    if g.level is None:
        return None
    who = "longs pay shorts" if avg_8h_pct >= 0 else "shorts pay longs"
    title = f"Funding {avg_8h_pct:+.4f}% per 8h: {who} (crowded {_side(avg_8h_pct)})"
    return Finding(Rule.FUNDING, g.level, title, {**g.evidence, "funding_avg_8h_pct": avg_8h_pct})


def _side(signed: float) -> str:
    return "longs" if signed >= 0 else "shorts"


def oi_change_rule(
    change_1_pct: float, t: Thresholds, adaptive: Adaptive = NO_HISTORY, window: str = "1h"
) -> Finding | None:
    """Open interest moving fast: positions opening (up) or being closed out (down)."""
    floors = {Level.HIGH: t.oi_change_high_pct, Level.MEDIUM: t.oi_change_medium_pct}
    g = grade("oi_change", abs(change_1_pct), floors, t, adaptive)
    if g.level is None:
        return None
    if change_1_pct >= 0:
        title = f"Open interest up {change_1_pct:.2f}% in {window}: new leveraged positions"
    else:
        title = f"Open interest down {-change_1_pct:.2f}% in {window}: positions closing"
    evidence = {**g.evidence, "oi_change_1_pct": change_1_pct, "window": window}
    return Finding(Rule.OI_CHANGE, g.level, title, evidence)


def liquidations_rule(
    long_usd: float,
    short_usd: float,
    t: Thresholds,
    adaptive: Adaptive = NO_HISTORY,
    window: str = "1h",
) -> Finding | None:
    """Liquidations of the last hour: a one-sided flush names its side, else the total counts."""
    strongest = _strongest(
        ("long", grade("long_liq", long_usd, {Level.HIGH: t.liq_long_high_usd}, t, adaptive)),
        ("short", grade("short_liq", short_usd, {Level.HIGH: t.liq_short_high_usd}, t, adaptive)),
        (
            "total",
            grade(
                "total_liq",
                long_usd + short_usd,
                {Level.MEDIUM: t.liq_total_medium_usd},
                t,
                adaptive,
            ),
        ),
    )
    if strongest is None:
        return None
    kind, g = strongest
    split = f"longs {_money(long_usd)}, shorts {_money(short_usd)}"
    titles = {
        "long": f"Long liquidation cascade: {_money(long_usd)} of longs liquidated in {window}",
        "short": f"Short squeeze: {_money(short_usd)} of shorts liquidated in {window}",
        "total": f"Heavy liquidations: {_money(long_usd + short_usd)} in {window} ({split})",
    }
    evidence = {
        **g.evidence,
        "long_liq_usd": long_usd,
        "short_liq_usd": short_usd,
        "kind": kind,
        "window": window,
    }
    return Finding(Rule.LIQUIDATIONS, g.level, titles[kind], evidence)


def retail_positioning_rule(
    retail_long_pct: float, t: Thresholds, adaptive: Adaptive = NO_HISTORY
) -> Finding | None:
    """Retail (all accounts) crowded on one side, the side the market tends to punish."""
    short_pct = 100 - retail_long_pct
    strongest = _strongest(
        (
            "long",
            grade(
                "retail_long", retail_long_pct, {Level.HIGH: t.retail_long_high_pct}, t, adaptive
            ),
        ),
        (
            "short",
            grade(
                "retail_short", short_pct, {Level.MEDIUM: t.retail_short_medium_pct}, t, adaptive
            ),
        ),
    )
    if strongest is None:
        return None
    side, g = strongest
    share = retail_long_pct if side == "long" else short_pct
    title = f"Retail crowded {side}: {share:.1f}% of accounts {side}"
    return Finding(
        Rule.RETAIL_POSITIONING, g.level, title, {**g.evidence, "retail_long_pct": retail_long_pct}
    )


def smart_money_rule(
    top_long_pct: float, retail_long_pct: float, t: Thresholds, adaptive: Adaptive = NO_HISTORY
) -> Finding | None:
    """Top traders positioned against retail: worded by the side the top traders lean to."""
    g = grade(
        "smart_money",
        abs(top_long_pct - retail_long_pct),
        {Level.HIGH: t.smart_money_gap_pts},
        t,
        adaptive,
        inclusive=True,
    )
    if g.level is None:
        return None
    lean = "longer" if top_long_pct > retail_long_pct else "shorter"
    title = (
        f"Smart money {lean} than retail: top traders {top_long_pct:.1f}% long"
        f" vs retail {retail_long_pct:.1f}%"
    )
    evidence = {
        **g.evidence,
        "top_account_long_pct": top_long_pct,
        "retail_long_pct": retail_long_pct,
    }
    return Finding(Rule.SMART_MONEY, g.level, title, evidence)


def taker_flow_rule(
    buy_share_pct: float, t: Thresholds, adaptive: Adaptive = NO_HISTORY
) -> Finding | None:
    """Aggressive market orders on one side; graded by the distance of the buy share from 50%."""
    if buy_share_pct >= 50:
        floor, side, share = t.taker_buy_high_pct - 50, "buying", buy_share_pct
    else:
        floor, side, share = 50 - t.taker_buy_low_pct, "selling", 100 - buy_share_pct
    g = grade("taker_flow", abs(buy_share_pct - 50), {Level.MEDIUM: floor}, t, adaptive)
    if g.level is None:
        return None
    title = f"Aggressive {side}: {share:.1f}% of taker volume {side.removesuffix('ing')}s"
    return Finding(
        Rule.TAKER_FLOW, g.level, title, {**g.evidence, "taker_buy_share_pct": buy_share_pct}
    )


def heatmap_zone_rule(price: float, zones: Sequence[Zone], t: Thresholds) -> Finding | None:
    """The strong composite-heatmap zone nearest the price: liquidations resting there pull
    price toward it (longs' liquidations sit below the price, shorts' above)."""
    strong = [z for z in zones if z.score >= t.heatmap_min_score]
    if not strong:
        return None
    zone = min(strong, key=lambda z: (abs(z.mid - price), -z.score))
    below = zone.mid < price
    distance_pct = (zone.mid / price - 1) * 100
    where = "below" if below else "above"
    title = (
        f"Liquidity zone {abs(distance_pct):.2f}% {where} price at"
        f" {_price(zone.price_low)}-{_price(zone.price_high)} (score {zone.score:.2f}):"
        f" {'long' if below else 'short'}-side magnet"
    )
    evidence = {
        "price": price,
        "price_low": zone.price_low,
        "price_high": zone.price_high,
        "score": zone.score,
        "distance_pct": distance_pct,
        "side": where,
        "strong_zones": len(strong),
        "min_score": t.heatmap_min_score,
    }
    return Finding(Rule.HEATMAP_ZONE, Level(t.heatmap_zone_level), title, evidence)


def _price(value: float) -> str:
    return f"{value:,.2f}" if value >= 100 else f"{value:.6g}"


# The snapshot fields each rule reads; a rule with any of them missing is skipped, not guessed.
RULE_INPUTS: dict[Rule, tuple[str, ...]] = {
    Rule.FUNDING: ("funding_avg_8h_pct",),
    Rule.OI_CHANGE: ("oi_change_1_pct",),
    Rule.LIQUIDATIONS: ("long_liq_usd", "short_liq_usd"),
    Rule.RETAIL_POSITIONING: ("retail_long_pct",),
    Rule.SMART_MONEY: ("top_account_long_pct", "retail_long_pct"),
    Rule.TAKER_FLOW: ("taker_buy_share_pct",),
    Rule.HEATMAP_ZONE: ("price",),
}


def findings(
    s: Snapshot,
    t: Thresholds,
    zones: Sequence[Zone] | None = None,
    adaptive: Adaptive = NO_HISTORY,
    window: str = "1h",
) -> list[Finding]:
    """Every rule whose inputs are present, applied to one snapshot; `zones=None` means no
    composite heatmap is available (the zone rule is skipped)."""
    results: list[Finding | None] = []
    if s.funding_avg_8h_pct is not None:
        results.append(funding_rule(s.funding_avg_8h_pct, t, adaptive))
    if s.oi_change_1_pct is not None:
        results.append(oi_change_rule(s.oi_change_1_pct, t, adaptive, window))
    if s.long_liq_usd is not None and s.short_liq_usd is not None:
        results.append(liquidations_rule(s.long_liq_usd, s.short_liq_usd, t, adaptive, window))
    if s.retail_long_pct is not None:
        results.append(retail_positioning_rule(s.retail_long_pct, t, adaptive))
        if s.top_account_long_pct is not None:
            results.append(smart_money_rule(s.top_account_long_pct, s.retail_long_pct, t, adaptive))
    if s.taker_buy_share_pct is not None:
        results.append(taker_flow_rule(s.taker_buy_share_pct, t, adaptive))
    if s.price is not None and zones is not None:
        results.append(heatmap_zone_rule(s.price, zones, t))
    return [f for f in results if f is not None]


def skipped_rules(
    s: Snapshot, zones: Sequence[Zone] | None, no_zones_reason: str = "no composite heatmap"
) -> dict[Rule, str]:
    """The rules that cannot run on this snapshot, each with the reason its input is missing."""
    skipped: dict[Rule, str] = {}
    for rule, inputs in RULE_INPUTS.items():
        absent = [f for f in inputs if getattr(s, f) is None]
        if absent:
            skipped[rule] = "; ".join(f"{f}: {s.missing.get(f, 'missing')}" for f in absent)
    if zones is None and Rule.HEATMAP_ZONE not in skipped:
        skipped[Rule.HEATMAP_ZONE] = no_zones_reason
    return skipped


def evaluate(
    snapshot: Snapshot,
    thresholds: Thresholds,
    zones: Sequence[Zone] | None = None,
    adaptive: Adaptive = NO_HISTORY,
    window: str = "1h",
    recent: Sequence[Signal] = (),
) -> list[Signal]:
    """The signals of one snapshot, plus a confluence signal when enough independent rules fire
    within the hour (`recent`: the coin's signals of earlier bars of that hour, for intervals
    shorter than an hour)."""
    signals = [
        Signal.at(snapshot.ts, snapshot.symbol, f)
        for f in findings(snapshot, thresholds, zones, adaptive, window)
    ]
    combined = confluence([*recent, *signals], thresholds) if signals else None
    return signals + ([combined] if combined else [])


def confluence(signals: Sequence[Signal], t: Thresholds) -> Signal | None:
    """One combined signal when rules from at least `confluence_min_rules` independent groups
    fired for a coin, at the strongest of their levels raised one step."""
    fired = [s for s in signals if s.rule is not Rule.CONFLUENCE]
    groups = {EVIDENCE_GROUP[s.rule] for s in fired}
    if len(groups) < t.confluence_min_rules:
        return None
    latest = max(fired, key=lambda s: s.ts)
    levels: dict[str, Level] = {}
    for s in fired:
        if s.rule not in levels or s.level.rank > levels[s.rule].rank:
            levels[s.rule] = s.level
    base = max(levels.values(), key=lambda lv: lv.rank)
    rules = [str(r) for r in Rule if r in levels]
    finding = Finding(
        Rule.CONFLUENCE,
        base.raised(),
        f"Confluence: {', '.join(rules)} agree ({len(groups)} independent signals)",
        {
            "rules": rules,
            "groups": sorted(groups),
            "levels": {r: str(levels[Rule(r)]) for r in rules},
            "base_level": str(base),
            "signal_ids": sorted({s.signal_id for s in fired}),
        },
    )
    return Signal.at(latest.ts, latest.symbol, finding)
