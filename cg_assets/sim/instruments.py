"""The simulator's listings: coins, exchanges and the contracts each exchange lists.

A coin's spec sets the level and scale of its synthetic series so they look like the real
asset's; an exchange's spec sets how it names its instruments and how far its own series
deviate from the coin-level market (shares, funding, basis, positioning bias). Everything that
needs to know what is listed (the market, the liquidation feed, the REST routes, the model
heatmaps) reads it from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

_MINUTES_PER_YEAR = 525_960

InstrumentKind = Literal["linear_perp", "inverse_perp", "dated"]


@dataclass(frozen=True)
class CoinSpec:
    """Level and scale of one coin, so series look like the real asset's."""

    coin: str
    price: float
    annual_vol: float
    open_interest_usd: float
    daily_volume_usd: float
    price_decimals: int
    max_leverage: int

    @property
    def sigma(self) -> float:
        return self.annual_vol / math.sqrt(_MINUTES_PER_YEAR)


COINS: dict[str, CoinSpec] = {
    c.coin: c
    for c in (
        CoinSpec("BTC", 90_000.0, 0.40, 60e9, 60e9, 1, 125),
        CoinSpec("ETH", 3_000.0, 0.55, 35e9, 30e9, 2, 100),
        CoinSpec("SOL", 150.0, 0.70, 8e9, 8e9, 3, 75),
        CoinSpec("XRP", 2.2, 0.70, 4e9, 5e9, 4, 75),
        CoinSpec("DOGE", 0.3, 0.80, 2.5e9, 3e9, 5, 75),
        CoinSpec("BNB", 650.0, 0.45, 1.2e9, 1.5e9, 2, 75),
        CoinSpec("HYPE", 25.0, 0.90, 1.5e9, 1.5e9, 3, 50),
    )
}


@dataclass(frozen=True)
class ExchangeSpec:
    """How an exchange names its instruments and how it deviates from the coin-level market."""

    name: str
    volume_share: float
    oi_share: float
    funding_interval_h: int
    funding_scale: float  # rate per funding interval relative to an 8h rate
    funding_offset: float  # percent
    basis: float  # relative premium of the exchange's price over the coin price
    long_bias: float  # percentage points added to long-account percentages
    linear: str  # instrument id templates; "{c}" is the coin
    inverse: str | None
    dated: str | None
    quote: str
    settlement: str
    inverse_coins: frozenset[str] = frozenset()
    dated_coins: frozenset[str] = frozenset()
    unlisted: frozenset[str] = frozenset()
    max_leverage_cap: int = 125


_DATED_EXPIRY = "260327"
EXCHANGES: dict[str, ExchangeSpec] = {
    e.name: e
    for e in (
        ExchangeSpec(
            "Binance", 0.40, 0.35, 8, 1.0, 0.0, 0.0, 0.0,
            "{c}USDT", "{c}USD_PERP", "{c}USDT_" + _DATED_EXPIRY, "USDT", "USDT",
            inverse_coins=frozenset({"BTC", "ETH", "SOL", "XRP", "DOGE", "BNB"}),
            dated_coins=frozenset({"BTC", "ETH"}),
        ),
        ExchangeSpec(
            "OKX", 0.18, 0.15, 8, 1.0, 0.002, 0.00008, -2.0,
            "{c}-USDT-SWAP", "{c}-USD-SWAP", "{c}-USDT-" + _DATED_EXPIRY, "USDT", "USDT",
            inverse_coins=frozenset({"BTC", "ETH", "SOL", "XRP", "DOGE"}),
            dated_coins=frozenset({"BTC", "ETH"}),
            unlisted=frozenset({"HYPE"}),
            max_leverage_cap=100,
        ),
        ExchangeSpec(
            "Bybit", 0.20, 0.20, 8, 1.0, -0.001, -0.00005, 3.0,
            "{c}USDT", "{c}USD", None, "USDT", "USDT",
            inverse_coins=frozenset({"BTC", "ETH", "XRP"}),
        ),
        ExchangeSpec(
            "Bitget", 0.12, 0.12, 8, 1.0, 0.003, 0.0001, 4.0,
            "{c}USDT_UMCBL", None, None, "USDT", "USDT",
        ),
        ExchangeSpec(
            "Hyperliquid", 0.10, 0.18, 1, 0.125, 0.0, 0.00015, -4.0,
            "{c}", None, None, "USD", "USDC",
            max_leverage_cap=40,
        ),
    )
}  # fmt: skip

# Share of an exchange's activity on each instrument kind (renormalised over what it lists).
_KIND_SHARE: dict[InstrumentKind, float] = {
    "linear_perp": 0.85,
    "inverse_perp": 0.12,
    "dated": 0.03,
}
KIND_BASIS: dict[InstrumentKind, float] = {
    "linear_perp": 0.0,
    "inverse_perp": -0.0003,
    "dated": 0.006,
}


@dataclass(frozen=True)
class Instrument:
    """One listed contract; the first seven fields are what supported-exchange-pairs returns."""

    instrument_id: str
    base_asset: str
    quote_asset: str
    settlement_currency: str
    max_leverage: int
    funding_interval: int | None  # hours; None for dated futures, which pay no funding
    price_tick_size: float
    exchange: str
    kind: InstrumentKind
    share: float  # of the exchange's volume and OI in this coin

    def as_pair(self) -> dict[str, object]:
        return {
            "instrument_id": self.instrument_id,
            "base_asset": self.base_asset,
            "quote_asset": self.quote_asset,
            "settlement_currency": self.settlement_currency,
            "max_leverage": self.max_leverage,
            "funding_interval": self.funding_interval,
            "price_tick_size": self.price_tick_size,
        }


def instruments_of(ex: ExchangeSpec, spec: CoinSpec) -> list[Instrument]:
    if spec.coin in ex.unlisted:
        return []
    kinds: list[tuple[InstrumentKind, str, str, str]] = [
        ("linear_perp", ex.linear, ex.quote, ex.settlement)
    ]
    if ex.inverse and spec.coin in ex.inverse_coins:
        kinds.append(("inverse_perp", ex.inverse, "USD", spec.coin))
    if ex.dated and spec.coin in ex.dated_coins:
        kinds.append(("dated", ex.dated, ex.quote, ex.settlement))
    total = sum(_KIND_SHARE[k] for k, *_ in kinds)
    return [
        Instrument(
            instrument_id=template.format(c=spec.coin),
            base_asset=spec.coin,
            quote_asset=quote,
            settlement_currency=settle,
            max_leverage=min(spec.max_leverage, ex.max_leverage_cap),
            funding_interval=None if kind == "dated" else ex.funding_interval_h,
            price_tick_size=10.0**-spec.price_decimals,
            exchange=ex.name,
            kind=kind,
            share=_KIND_SHARE[kind] / total,
        )
        for kind, template, quote, settle in kinds
    ]


def next_funding_time(instrument: Instrument, now_ms: int) -> int | None:
    """The next settlement (funding times are multiples of the interval from UTC midnight)."""
    if instrument.funding_interval is None:
        return None
    step = instrument.funding_interval * 3_600_000
    return (now_ms // step + 1) * step
