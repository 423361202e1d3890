"""What each market asset is made of: its CoinGlass endpoints, columns and quality rules.

The seven market assets differ only in data, not in code: which endpoints feed them, whether an
endpoint takes an exchange pair, a coin, or a coin plus an exchange list, how API fields map to
columns, and which value ranges hold. Keeping that as a table lets one fetcher, one writer and
one set of checks serve all of them, and lets tests walk the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa

from cg_assets.tables import Column, schema_of


class Scope(StrEnum):
    PAIR = "pair"  # `exchange` + `symbol` = the exchange's instrument id
    COIN = "coin"  # `symbol` = coin, aggregated over CoinGlass's own exchange set
    COIN_EXCHANGES = "coin_exchanges"  # `symbol` = coin, `exchange_list` = configured exchanges


@dataclass(frozen=True)
class Endpoint:
    path: str
    scope: Scope
    fields: dict[str, str]  # API field -> column
    constants: dict[str, str] = field(default_factory=dict)  # e.g. {"scope": "top_account"}
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketAsset:
    name: str
    description: str
    endpoints: tuple[Endpoint, ...]
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # unique per row; everything but `ts` identifies a series
    # column -> (low, high, low inclusive); None means unbounded on that side.
    ranges: dict[str, tuple[float | None, float | None, bool]] = field(default_factory=dict)

    @property
    def series_key(self) -> tuple[str, ...]:
        return tuple(c for c in self.key if c != "ts")

    @property
    def schema(self) -> pa.Schema:
        return schema_of(self.columns)


TS = Column("ts", pa.timestamp("ms", tz="UTC"), "Bar start, UTC")
SYMBOL = Column("symbol", pa.string(), "Coin ticker, e.g. BTC")
EXCHANGE = Column("exchange", pa.string(), "Exchange display name as CoinGlass spells it")
PAIR = Column("pair", pa.string(), "The exchange's instrument id of the USDT-margined perpetual")


def _f64(name: str, description: str) -> Column:
    return Column(name, pa.float64(), description)


def _ohlc(unit: str) -> tuple[Column, ...]:
    return tuple(
        _f64(n, f"{n.capitalize()} of the bar, {unit}") for n in ("open", "high", "low", "close")
    )


_OHLC_FIELDS = {n: n for n in ("open", "high", "low", "close")}
_POSITIVE = (0.0, None, False)
_NON_NEGATIVE = (0.0, None, True)
_PERCENT = (0.0, 100.0, True)
_FUNDING_UNIT = "percent per funding interval (0.01 = 0.01%)"


def _ratio_endpoint(prefix: str, path: str) -> Endpoint:
    """The three ratio endpoints share a shape; their fields carry the scope as a prefix."""
    return Endpoint(
        path,
        Scope.PAIR,
        {
            f"{prefix}_long_percent": "long_percent",
            f"{prefix}_short_percent": "short_percent",
            f"{prefix}_long_short_ratio": "long_short_ratio",
        },
        constants={"scope": prefix},
    )


MARKET_ASSETS: tuple[MarketAsset, ...] = (
    MarketAsset(
        name="funding_rate_ohlc",
        description="Funding rate OHLC per exchange perpetual, one row per bar.",
        endpoints=(Endpoint("/api/futures/funding-rate/history", Scope.PAIR, dict(_OHLC_FIELDS)),),
        columns=(TS, SYMBOL, EXCHANGE, PAIR, *_ohlc(_FUNDING_UNIT)),
        key=("ts", "symbol", "exchange"),
    ),
    MarketAsset(
        name="funding_rate_weighted_ohlc",
        description="Open-interest- and volume-weighted funding rate OHLC per coin.",
        endpoints=(
            Endpoint(
                "/api/futures/funding-rate/oi-weight-history",
                Scope.COIN,
                dict(_OHLC_FIELDS),
                constants={"weighting": "oi"},
            ),
            Endpoint(
                "/api/futures/funding-rate/vol-weight-history",
                Scope.COIN,
                dict(_OHLC_FIELDS),
                constants={"weighting": "volume"},
            ),
        ),
        columns=(
            TS,
            SYMBOL,
            Column("weighting", pa.string(), "oi (open-interest weighted) or volume"),
            *_ohlc(_FUNDING_UNIT),
        ),
        key=("ts", "symbol", "weighting"),
    ),
    MarketAsset(
        name="open_interest_ohlc",
        description="Aggregated open interest OHLC per coin across CoinGlass's exchanges, USD.",
        endpoints=(
            Endpoint(
                "/api/futures/open-interest/aggregated-history",
                Scope.COIN,
                dict(_OHLC_FIELDS),
                params={"unit": "usd"},
            ),
        ),
        columns=(TS, SYMBOL, *_ohlc("USD")),
        key=("ts", "symbol"),
        ranges={c: _POSITIVE for c in ("open", "high", "low", "close")},
    ),
    MarketAsset(
        name="taker_volume",
        description="Taker buy and sell volume per coin over the configured exchanges, USD.",
        endpoints=(
            Endpoint(
                "/api/futures/aggregated-taker-buy-sell-volume/history",
                Scope.COIN_EXCHANGES,
                {
                    "aggregated_buy_volume_usd": "buy_volume_usd",
                    "aggregated_sell_volume_usd": "sell_volume_usd",
                },
                params={"unit": "usd"},
            ),
        ),
        columns=(
            TS,
            SYMBOL,
            _f64("buy_volume_usd", "Taker buy volume in the bar, USD"),
            _f64("sell_volume_usd", "Taker sell volume in the bar, USD"),
        ),
        key=("ts", "symbol"),
        ranges={"buy_volume_usd": _NON_NEGATIVE, "sell_volume_usd": _NON_NEGATIVE},
    ),
    MarketAsset(
        name="long_short_ratio",
        description=(
            "Long/short ratios per exchange perpetual: all accounts (retail), top-trader"
            " accounts and top-trader positions."
        ),
        endpoints=(
            _ratio_endpoint(
                "global_account", "/api/futures/global-long-short-account-ratio/history"
            ),
            _ratio_endpoint("top_account", "/api/futures/top-long-short-account-ratio/history"),
            _ratio_endpoint("top_position", "/api/futures/top-long-short-position-ratio/history"),
        ),
        columns=(
            TS,
            SYMBOL,
            EXCHANGE,
            PAIR,
            Column("scope", pa.string(), "global_account, top_account or top_position"),
            _f64("long_percent", "Share long, percent 0-100"),
            _f64("short_percent", "Share short, percent 0-100"),
            _f64("long_short_ratio", "long_percent / short_percent"),
        ),
        key=("ts", "symbol", "exchange", "scope"),
        ranges={
            "long_percent": _PERCENT,
            "short_percent": _PERCENT,
            "long_short_ratio": _NON_NEGATIVE,
        },
    ),
    MarketAsset(
        name="liquidation_history",
        description="Long and short liquidations per coin over the configured exchanges, USD.",
        endpoints=(
            Endpoint(
                "/api/futures/liquidation/aggregated-history",
                Scope.COIN_EXCHANGES,
                {
                    "aggregated_long_liquidation_usd": "long_liquidation_usd",
                    "aggregated_short_liquidation_usd": "short_liquidation_usd",
                },
            ),
        ),
        columns=(
            TS,
            SYMBOL,
            _f64("long_liquidation_usd", "Longs liquidated in the bar, USD"),
            _f64("short_liquidation_usd", "Shorts liquidated in the bar, USD"),
        ),
        key=("ts", "symbol"),
        ranges={"long_liquidation_usd": _NON_NEGATIVE, "short_liquidation_usd": _NON_NEGATIVE},
    ),
    MarketAsset(
        name="price_ohlc",
        description="Futures price OHLC and traded volume per exchange perpetual.",
        endpoints=(
            Endpoint(
                "/api/futures/price/history",
                Scope.PAIR,
                {**_OHLC_FIELDS, "volume_usd": "volume_usd"},
            ),
        ),
        columns=(
            TS,
            SYMBOL,
            EXCHANGE,
            PAIR,
            *_ohlc("USD per coin"),
            _f64("volume_usd", "Traded volume in the bar, USD"),
        ),
        key=("ts", "symbol", "exchange"),
        ranges={
            **{c: _POSITIVE for c in ("open", "high", "low", "close")},
            "volume_usd": _NON_NEGATIVE,
        },
    ),
)

MARKET_ASSETS_BY_NAME = {a.name: a for a in MARKET_ASSETS}
