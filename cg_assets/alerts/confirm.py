"""Confirming a liquidation heads-up against the market: do the other gauges agree?

A burst of liquidations is noise unless the rest of the market moves with it. For a long
cascade (longs being liquidated, price falling) the confirming signs are: takers selling,
open interest falling (positions are being closed, not opened), funding positive (longs were
crowded) and the aggregated liquidations of the coin dominated by longs. A short squeeze is
the mirror image. The heads-up is confirmed when at least `min_agree` of the four agree.

The evidence comes from the latest bars of four REST series for the coin, fetched right
after the heads-up; the maths here is pure so it is tested directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from cg_assets.market.series import MARKET_ASSETS

# The coin-level series the confirmation reads, by market asset name.
EVIDENCE_ASSETS = tuple(
    a
    for a in MARKET_ASSETS
    if a.name
    in ("funding_rate_weighted_ohlc", "open_interest_ohlc", "taker_volume", "liquidation_history")
)


class ConfirmRules(dg.Config):
    """How a heads-up is confirmed; every number is configurable per run."""

    # Bar size of the confirming series (Standard plans allow 1m) and how many of the latest
    # bars make the evidence window, the current, unfinished bar included: a heads-up comes
    # seconds into a cascade, when every closed bar still shows the calm before it.
    interval: str = "1m"
    bars: int = 5
    taker_share_pct: float = 45.0  # cascade: buy share at or below; squeeze: at or above 100-x
    oi_change_pct: float = 0.5  # cascade: OI falls at least this much; squeeze: too (shorts close)
    liquidation_share_pct: float = 60.0  # share of the window's liquidations on the burst's side
    min_agree: int = 3  # of the four checks

    def validate(self) -> None:
        problems = []
        if self.bars < 1:
            problems.append(f"bars must be >= 1, got {self.bars}")
        if not 0 < self.taker_share_pct < 50:
            problems.append(f"taker_share_pct must be in (0, 50), got {self.taker_share_pct}")
        if self.oi_change_pct < 0:
            problems.append(f"oi_change_pct must be >= 0, got {self.oi_change_pct}")
        if not 50 <= self.liquidation_share_pct <= 100:
            problems.append(
                f"liquidation_share_pct must be in [50, 100], got {self.liquidation_share_pct}"
            )
        if not 1 <= self.min_agree <= 4:
            problems.append(f"min_agree must be between 1 and 4, got {self.min_agree}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class Evidence:
    """The market around a burst; None where the API had no bar."""

    taker_buy_share_pct: float | None
    oi_change_pct: float | None
    funding_pct: float | None
    long_liquidation_usd: float | None
    short_liquidation_usd: float | None


@dataclass(frozen=True)
class Check:
    name: str
    agrees: bool
    detail: str


@dataclass(frozen=True)
class Confirmation:
    side: str  # the side being liquidated
    confirmed: bool
    checks: tuple[Check, ...]

    @property
    def agreeing(self) -> int:
        return sum(c.agrees for c in self.checks)


def confirm(side: str, evidence: Evidence, rules: ConfirmRules) -> Confirmation:
    """Weigh the evidence for a burst that liquidated `side` ("long" or "short")."""
    if side not in ("long", "short"):
        raise ValueError(f"side must be 'long' or 'short', got {side!r}")
    cascade = side == "long"
    checks = (
        _taker(evidence.taker_buy_share_pct, cascade, rules.taker_share_pct),
        _open_interest(evidence.oi_change_pct, rules.oi_change_pct),
        _funding(evidence.funding_pct, cascade),
        _liquidations(
            evidence.long_liquidation_usd,
            evidence.short_liquidation_usd,
            cascade,
            rules.liquidation_share_pct,
        ),
    )
    agreeing = sum(c.agrees for c in checks)
    return Confirmation(side, agreeing >= rules.min_agree, checks)


def _taker(share: float | None, cascade: bool, limit: float) -> Check:
    if share is None:
        return Check("taker flow", False, "no taker volume bar")
    if cascade:
        return Check(
            "taker flow",
            share <= limit,
            f"taker buy share {share:.1f}% (sellers ≥ {100 - limit:.0f}%?)",
        )
    return Check(
        "taker flow",
        share >= 100 - limit,
        f"taker buy share {share:.1f}% (buyers ≥ {100 - limit:.0f}%?)",
    )


def _open_interest(change: float | None, limit: float) -> Check:
    if change is None:
        return Check("open interest", False, "no open-interest bars")
    return Check(
        "open interest", change <= -limit, f"open interest {change:+.2f}% (falling ≥ {limit:g}%?)"
    )


def _funding(funding: float | None, cascade: bool) -> Check:
    if funding is None:
        return Check("funding", False, "no funding bar")
    agrees = funding > 0 if cascade else funding < 0
    crowd = "longs" if cascade else "shorts"
    return Check("funding", agrees, f"funding {funding:+.4f}% ({crowd} paying?)")


def _liquidations(
    long_usd: float | None, short_usd: float | None, cascade: bool, limit: float
) -> Check:
    if long_usd is None or short_usd is None:
        return Check("liquidations", False, "no aggregated liquidation bars")
    total = long_usd + short_usd
    if total <= 0:
        return Check("liquidations", False, "no liquidations in the window")
    share = 100 * (long_usd if cascade else short_usd) / total
    side = "long" if cascade else "short"
    return Check(
        "liquidations",
        share >= limit,
        f"{share:.0f}% of ${total:,.0f} were {side}s (≥ {limit:g}%?)",
    )


def evidence_from_tables(tables: dict[str, pa.Table], bars: int) -> Evidence:
    """Evidence from the latest `bars` bars of each series (tables as the market assets
    shape them, for one coin)."""

    def tail(name: str, n: int) -> list[dict]:
        table = tables.get(name)
        return [] if table is None else table.sort_by("ts").to_pylist()[-n:]

    taker = tail("taker_volume", bars)
    buy = sum(r["buy_volume_usd"] for r in taker)
    sell = sum(r["sell_volume_usd"] for r in taker)
    oi = tail("open_interest_ohlc", bars + 1)
    funding = [r for r in tail("funding_rate_weighted_ohlc", 2 * bars) if r["weighting"] == "oi"]
    liq = tail("liquidation_history", bars)
    return Evidence(
        taker_buy_share_pct=100 * buy / (buy + sell) if buy + sell > 0 else None,
        oi_change_pct=_change_pct(oi[0]["close"], oi[-1]["close"]) if len(oi) >= 2 else None,
        funding_pct=funding[-1]["close"] if funding else None,
        long_liquidation_usd=sum(r["long_liquidation_usd"] for r in liq) if liq else None,
        short_liquidation_usd=sum(r["short_liquidation_usd"] for r in liq) if liq else None,
    )


def _change_pct(before: float, after: float) -> float | None:
    return 100 * (after / before - 1) if before and math.isfinite(before) else None
