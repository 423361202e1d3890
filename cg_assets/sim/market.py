"""A deterministic synthetic crypto-derivatives market for the CoinGlass simulator.

Every value derives from one seeded 1-minute grid per coin that starts at `epoch_ms`, so a bar
has the same numbers whichever request window asks for it: tests can page, overlap and re-fetch
and compare exactly. Minutes are generated in fixed-size chunks, each from its own seed and the
previous chunk's final state, so the grid is the same however far it has been extended.

Per-exchange series are the coin series scaled by market shares and perturbed by a hash of
(UTC day, exchange, instrument): flows by a step per day, so bars up to 1d sum consistently
with finer ones; levels (price, OI, funding, ratios) by values interpolated between midnights,
so they never jump at a day boundary and a coarse bar closes where its last fine bar closes.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from cg_assets.coinglass.plans import DAY_MS, MINUTE_MS

if TYPE_CHECKING:
    from cg_assets.sim.scenarios import Scenario

DEFAULT_EPOCH_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)

# 2**16 minutes (~45 days): small enough that the first request does not over-generate much,
# large enough that numpy's per-call overhead does not matter.
_CHUNK = 1 << 16
_MINUTES_PER_YEAR = 525_960

_BURST_PROB = 1 / 4_320  # about one volatility burst every three days
_BURST_HALFLIFE_MIN = 90
_BURST_DRIFT = 0.12  # cascades: directional drift, in sigmas per unit of burst intensity
_PRICE_REVERSION_HALFLIFE_MIN = 60 * 1_440  # keeps a year-long walk near realistic levels
_OI_REVERSION_HALFLIFE_MIN = 30 * 1_440
_LIQ_MOMENTUM_HALFLIFE_MIN = 15  # liquidations follow the move of the last quarter hour
_FAST_MOMENTUM_HALFLIFE_MIN = 240
_SLOW_MOMENTUM_HALFLIFE_MIN = 480
_LIQ_PER_MIN_OF_OI = 1.2e-5
# Long-run means of the positioning series, which scenario episodes push away from and back to.
FUNDING_MEAN = 0.01  # percent per 8h
GLOBAL_LONG_MEAN = 56.0
TOP_ACCOUNT_LONG_MEAN = 53.0
TOP_POSITION_LONG_MEAN = 51.0

LongShortKind = Literal["global_account", "top_account", "top_position"]
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
_KIND_BASIS: dict[InstrumentKind, float] = {
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


def _instruments_of(ex: ExchangeSpec, spec: CoinSpec) -> list[Instrument]:
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


# --------------------------------------------------------------------------- minute generation


@dataclass(frozen=True)
class _State:
    """Everything a chunk needs from the previous one to continue its walks seamlessly."""

    dev: float = 0.0  # log-price deviation from the coin's level
    oi_dev: float = 0.0
    vol: float = 0.0  # volatility-burst intensity
    signed: float = 0.0  # directional burst intensity (cascade drift)
    m_liq: float = 0.0
    m_fast: float = 0.0
    m_slow: float = 0.0
    funding_noise: float = 0.0
    global_noise: float = 0.0
    top_account_noise: float = 0.0
    top_position_noise: float = 0.0


_FIELDS = (
    "close",
    "oi",
    "funding",
    "volume",
    "buy",
    "global_long",
    "top_account_long",
    "top_position_long",
    "liq_long",
    "liq_short",
)


def _decay(halflife_min: float) -> float:
    return 0.5 ** (1.0 / halflife_min)


def _ar1(innovations: np.ndarray, phi: float, init: float) -> np.ndarray:
    """y[t] = phi*y[t-1] + e[t] starting from `init`, via pandas' compiled EWM recursion."""
    alpha = 1.0 - phi
    x = np.empty(len(innovations) + 1)
    x[0] = init
    x[1:] = innovations / alpha
    return pd.Series(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()[1:]


def _ar1_noise(
    rng: np.random.Generator, n: int, halflife: float, std: float, init: float
) -> np.ndarray:
    """Stationary AR(1) noise with the given standard deviation and half-life in minutes."""
    phi = _decay(halflife)
    return _ar1(rng.standard_normal(n) * std * math.sqrt(1 - phi * phi), phi, init)


def _ema_std(halflife: float) -> float:
    """Standard deviation of an EMA of unit white noise, to normalise momentum to ~N(0, 1)."""
    alpha = 1.0 - _decay(halflife)
    return math.sqrt(alpha / (2.0 - alpha))


def _momentum(zr: np.ndarray, halflife: float, init: float) -> np.ndarray:
    """EMA of per-minute returns in sigmas (unnormalised, so it can carry over as state)."""
    phi = _decay(halflife)
    return _ar1(zr * (1.0 - phi), phi, init)


def _bursts(rng: np.random.Generator, n: int, st: _State) -> tuple[np.ndarray, np.ndarray]:
    """Volatility-burst intensity and its signed twin, which drifts price into a cascade."""
    impulses = np.zeros(n)
    signed = np.zeros(n)
    k = rng.binomial(n, _BURST_PROB)
    at = rng.integers(0, n, k)
    amps = rng.uniform(1.5, 4.0, k)
    impulses[at] = amps
    signed[at] = amps * np.where(rng.random(k) < 0.5, -1.0, 1.0)
    phi = _decay(_BURST_HALFLIFE_MIN)
    return _ar1(impulses, phi, st.vol), _ar1(signed, phi, st.signed)


def _liquidation_rates(
    zr: np.ndarray, liq_n: np.ndarray, vol: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fractions of OI liquidated per minute: longs by a sharp or sustained fall, shorts by a
    rise; bursts amplify both."""
    down = (0.5 * np.maximum(-zr, 0.0) ** 2 + np.maximum(-liq_n, 0.0) ** 2) * (1.0 + vol)
    up = (0.5 * np.maximum(zr, 0.0) ** 2 + np.maximum(liq_n, 0.0) ** 2) * (1.0 + vol)
    return _LIQ_PER_MIN_OF_OI * (0.03 + 0.13 * down), _LIQ_PER_MIN_OF_OI * (0.03 + 0.13 * up)


def _generate_chunk(
    spec: CoinSpec, rng: np.random.Generator, st: _State, n: int
) -> tuple[dict[str, np.ndarray], _State]:
    """One chunk of minutes: price walk with bursts, and everything else driven by it."""
    sigma = spec.sigma
    z = rng.standard_normal(n)
    vol, signed = _bursts(rng, n, st)
    shocks = sigma * (1.0 + vol) * z + _BURST_DRIFT * sigma * signed
    dev = _ar1(shocks, _decay(_PRICE_REVERSION_HALFLIFE_MIN), st.dev)
    ret = np.diff(dev, prepend=st.dev)
    zr = ret / sigma
    m_liq = _momentum(zr, _LIQ_MOMENTUM_HALFLIFE_MIN, st.m_liq)
    m_fast = _momentum(zr, _FAST_MOMENTUM_HALFLIFE_MIN, st.m_fast)
    m_slow = _momentum(zr, _SLOW_MOMENTUM_HALFLIFE_MIN, st.m_slow)
    liq_n = m_liq / _ema_std(_LIQ_MOMENTUM_HALFLIFE_MIN)
    fast_n = m_fast / _ema_std(_FAST_MOMENTUM_HALFLIFE_MIN)
    slow_n = m_slow / _ema_std(_SLOW_MOMENTUM_HALFLIFE_MIN)

    liq_rate_long, liq_rate_short = _liquidation_rates(zr, liq_n, vol)
    # OI tracks price, builds up while a trend runs and is flushed by liquidations.
    oi_shocks = (
        0.35 * ret
        + 0.15 * sigma * rng.standard_normal(n)
        + 4e-6 * np.tanh(np.abs(slow_n) / 2)
        - 3.0 * (liq_rate_long + liq_rate_short)
        + 3.0 * _LIQ_PER_MIN_OF_OI * 0.3  # the average flush, so OI does not drain away
    )
    oi_dev = _ar1(oi_shocks, _decay(_OI_REVERSION_HALFLIFE_MIN), st.oi_dev)
    oi = spec.open_interest_usd * np.exp(oi_dev)

    funding_noise = _ar1_noise(rng, n, 720, 0.008, st.funding_noise)
    funding = np.clip(FUNDING_MEAN + 0.03 * slow_n + funding_noise, -0.3, 0.4)

    volume = (
        spec.daily_volume_usd
        / 1_440
        * (1.0 + 1.5 * vol)
        * (1.0 + 0.25 * np.abs(z))
        * np.exp(0.3 * rng.standard_normal(n) - 0.045)
    )
    buy_share = np.clip(0.5 + 0.12 * np.tanh(zr / 1.5) + 0.02 * rng.standard_normal(n), 0.05, 0.95)

    global_noise = _ar1_noise(rng, n, 360, 2.0, st.global_noise)
    top_account_noise = _ar1_noise(rng, n, 360, 2.0, st.top_account_noise)
    top_position_noise = _ar1_noise(rng, n, 240, 3.0, st.top_position_noise)
    liq_noise = np.exp(0.6 * rng.standard_normal((2, n)) - 0.18)

    data = {
        "close": spec.price * np.exp(dev),
        "oi": oi,
        "funding": funding,
        # Retail leans long into drops; top traders follow the trend.
        "global_long": np.clip(
            GLOBAL_LONG_MEAN - 9.0 * np.tanh(slow_n / 1.5) + global_noise, 5.0, 95.0
        ),
        "top_account_long": np.clip(
            TOP_ACCOUNT_LONG_MEAN + 5.0 * np.tanh(slow_n / 1.5) + top_account_noise, 5.0, 95.0
        ),
        "top_position_long": np.clip(
            TOP_POSITION_LONG_MEAN + 7.0 * np.tanh(fast_n / 1.5) + top_position_noise, 5.0, 95.0
        ),
        "volume": volume,
        "buy": volume * buy_share,
        "liq_long": oi * liq_rate_long * liq_noise[0],
        "liq_short": oi * liq_rate_short * liq_noise[1],
    }
    end = _State(
        dev=float(dev[-1]),
        oi_dev=float(oi_dev[-1]),
        vol=float(vol[-1]),
        signed=float(signed[-1]),
        m_liq=float(m_liq[-1]),
        m_fast=float(m_fast[-1]),
        m_slow=float(m_slow[-1]),
        funding_noise=float(funding_noise[-1]),
        global_noise=float(global_noise[-1]),
        top_account_noise=float(top_account_noise[-1]),
        top_position_noise=float(top_position_noise[-1]),
    )
    return {k: data[k].astype(np.float64 if k == "close" else np.float32) for k in _FIELDS}, end


@dataclass(frozen=True)
class _Minutes:
    """A generated prefix of one coin's minute grid; replaced, never mutated, when extended."""

    arrays: dict[str, np.ndarray]
    length: int
    state: _State


# Bar aggregation: how each minute field becomes a bar value.
_OHLC_FIELDS = frozenset({"close", "oi", "funding", "oi_coin"})
_SUM_FIELDS = frozenset({"volume", "buy", "sell", "buy_coin", "sell_coin", "liq_long", "liq_short"})


def _derived(arrays: dict[str, np.ndarray], name: str, lo: int, hi: int) -> np.ndarray:
    """A minute series over [lo, hi), computing the coin-unit and sell-side views on demand."""
    if name in arrays:
        return arrays[name][lo:hi]
    close = arrays["close"][lo:hi]
    volume = arrays["volume"][lo:hi].astype(np.float64)
    buy = arrays["buy"][lo:hi].astype(np.float64)
    views = {
        "sell": lambda: volume - buy,
        "oi_coin": lambda: arrays["oi"][lo:hi] / close,
        "buy_coin": lambda: buy / close,
        "sell_coin": lambda: (volume - buy) / close,
    }
    return views[name]()


def _aggregate(
    arrays: dict[str, np.ndarray], first: np.ndarray, stop: np.ndarray, fields: Iterable[str]
) -> dict[str, np.ndarray]:
    """Minutes [first[j], stop[j]) into bar j; OHLC fields open at the previous minute's close."""
    lo = max(int(first[0]) - 1, 0)
    hi = int(stop[-1])
    idx = first - lo
    last = stop - 1 - lo
    prev = np.maximum(first - 1 - lo, 0)
    out: dict[str, np.ndarray] = {}
    for name in fields:
        seg = _derived(arrays, name, lo, hi)
        if name in _OHLC_FIELDS:
            open_ = seg[prev].astype(np.float64)
            out[f"{name}.open"] = open_
            out[f"{name}.high"] = np.maximum(np.maximum.reduceat(seg, idx), open_)
            out[f"{name}.low"] = np.minimum(np.minimum.reduceat(seg, idx), open_)
            out[f"{name}.close"] = seg[last].astype(np.float64)
        elif name in _SUM_FIELDS:
            out[name] = np.add.reduceat(seg, idx, dtype=np.float64)
        else:
            out[name] = seg[last].astype(np.float64)
    return out


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _hash_uniform(keys: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of each key, as uniform noise in [-1, 1): stateless, so any window agrees."""
    x = keys.astype(np.uint64) * _GOLDEN + np.uint64(salt)
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (2.0 / 2.0**53) - 1.0


def _daily_noise(t: np.ndarray, salt: int, smooth: bool) -> np.ndarray:
    """Noise drawn once per UTC day: a step at midnight, or interpolated between midnights.

    Steps suit flows (sums over bars up to a day stay consistent across intervals); levels
    such as prices and open interest use the smooth form so they do not jump at midnight.
    """
    day = t // DAY_MS
    today = _hash_uniform(day, salt)
    if not smooth:
        return today
    return today + (_hash_uniform(day + 1, salt) - today) * ((t - day * DAY_MS) / DAY_MS)


TimeFn = Callable[[np.ndarray], np.ndarray]
_OHLC = ("open", "high", "low", "close")


@dataclass(frozen=True)
class _Bars:
    """Coin-level bar aggregates plus when each bar's data ends (now, for the current bar)."""

    time: np.ndarray
    end: np.ndarray
    v: dict[str, np.ndarray]

    def scaled(self, name: str, factor: TimeFn) -> dict[str, np.ndarray]:
        """OHLC of a positive series times a positive factor that varies over time.

        Open and close take the factor at the bar's start and end, so a bar opens where the
        previous one closed; high and low take its extremes, so they still bound open and close.
        """
        f0, f1 = factor(self.time), factor(self.end)
        return {
            "open": self.v[f"{name}.open"] * f0,
            "high": self.v[f"{name}.high"] * np.maximum(f0, f1),
            "low": self.v[f"{name}.low"] * np.minimum(f0, f1),
            "close": self.v[f"{name}.close"] * f1,
        }

    def shifted(self, name: str, shift: TimeFn, scale: float) -> dict[str, np.ndarray]:
        """OHLC of (series + time-varying shift) × a positive constant; see `scaled`."""
        s0, s1 = shift(self.time), shift(self.end)
        return {
            "open": (self.v[f"{name}.open"] + s0) * scale,
            "high": (self.v[f"{name}.high"] + np.maximum(s0, s1)) * scale,
            "low": (self.v[f"{name}.low"] + np.minimum(s0, s1)) * scale,
            "close": (self.v[f"{name}.close"] + s1) * scale,
        }


def _aggregate_keys(fields: Iterable[str]) -> list[str]:
    return [
        f"{name}.{part}" if name in _OHLC_FIELDS else name
        for name in fields
        for part in (_OHLC if name in _OHLC_FIELDS else ("",))
    ]


def _now() -> int:
    return time.time_ns() // 1_000_000


def _frame(times: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"time": times, **columns})


_LONG_FIELD: dict[LongShortKind, str] = {
    "global_account": "global_long",
    "top_account": "top_account_long",
    "top_position": "top_position_long",
}
_INVERSE_FUNDING_OFFSET = -0.002
ShareSeries = Literal["oi", "volume", "liquidation"]


class SyntheticMarket:
    """Deterministic minute-level market for a fixed set of coins and exchanges.

    All bar methods take an interval in ms and a window [start_ms, end_ms) and return one row per
    bar whose start is aligned to the interval (from the Unix epoch), at or after `epoch_ms` (the
    listing time: there is no data before it) and at or before `now_ms` (default: the wall clock;
    the last bar may be the current, partial one). Frames have an int64 `time` column (bar start,
    ms) and float columns named as the API names them. Per-pair methods raise KeyError for an
    exchange or instrument the market does not list.

    A `scenario` draws its episodes into the minute grid as each chunk is generated; it is
    fixed at construction, so no minute is ever cached without the episodes that touch it.
    Without one (or with "calm") the grid is the plain seeded market.
    """

    def __init__(
        self, seed: int = 7, epoch_ms: int = DEFAULT_EPOCH_MS, scenario: Scenario | None = None
    ) -> None:
        if epoch_ms % MINUTE_MS:
            raise ValueError(f"epoch_ms must be on a minute boundary, got {epoch_ms}")
        self.seed = seed
        self.epoch_ms = epoch_ms
        self.scenario = scenario
        self.coins: tuple[str, ...] = tuple(COINS)
        self.exchanges: tuple[str, ...] = tuple(EXCHANGES)
        self._instruments: dict[str, dict[str, Instrument]] = {
            ex.name: {
                i.instrument_id: i for spec in COINS.values() for i in _instruments_of(ex, spec)
            }
            for ex in EXCHANGES.values()
        }
        self._minutes: dict[str, _Minutes] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reference data

    def instruments(self, exchange: str | None = None) -> dict[str, list[Instrument]]:
        """Listed instruments per exchange (all exchanges, or just `exchange`)."""
        names = self.exchanges if exchange is None else (exchange,)
        return {name: list(self._instruments[name].values()) for name in names}

    def instrument(self, exchange: str, instrument_id: str) -> Instrument:
        """The instrument `instrument_id` on `exchange`; KeyError when it is not listed there."""
        return self._instruments[exchange][instrument_id]

    def listing_exchanges(self, coin: str) -> list[str]:
        """Exchanges that list `coin`, in the market's exchange order."""
        return [name for name in self.exchanges if coin not in EXCHANGES[name].unlisted]

    # ------------------------------------------------------------------ minute grid

    def _extend(self, coin: str, minutes: int) -> _Minutes:
        """The coin's grid covering at least `minutes` minutes, generating whole chunks."""
        have = self._minutes.get(coin)
        if have is not None and have.length >= minutes:
            return have
        with self._lock:
            have = self._minutes.get(coin)
            parts = [] if have is None else [have.arrays]
            length, state = (0, _State()) if have is None else (have.length, have.state)
            while length < minutes:
                rng = np.random.default_rng([self.seed, self._salt(coin), length // _CHUNK])
                chunk, state = _generate_chunk(COINS[coin], rng, state, _CHUNK)
                if self.scenario is not None:
                    start_ms = self.epoch_ms + length * MINUTE_MS
                    chunk = self.scenario.shape(COINS[coin], chunk, start_ms)
                parts.append(chunk)
                length += _CHUNK
            if have is None or length > have.length:
                arrays = {k: np.concatenate([p[k] for p in parts]) for k in _FIELDS}
                have = _Minutes(arrays, length, state)
                self._minutes[coin] = have
            return have

    def _coin_bars(
        self,
        coin: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None,
        fields: tuple[str, ...],
    ) -> _Bars:
        """The coin-level aggregates of `fields` for each bar starting in the window."""
        now = _now() if now_ms is None else now_ms
        first = -(-max(start_ms, self.epoch_ms) // interval_ms) * interval_ms
        times = np.arange(first, min(end_ms, now + 1), interval_ms, dtype=np.int64)
        if len(times) == 0:
            return _Bars(times, times, {k: np.empty(0) for k in _aggregate_keys(fields)})
        available = (now - self.epoch_ms) // MINUTE_MS + 1
        start_idx = (times - self.epoch_ms) // MINUTE_MS
        stop_idx = np.minimum(start_idx + interval_ms // MINUTE_MS, available)
        minutes = self._extend(coin, int(stop_idx[-1]))
        ends = self.epoch_ms + stop_idx * MINUTE_MS
        return _Bars(times, ends, _aggregate(minutes.arrays, start_idx, stop_idx, fields))

    # ------------------------------------------------------------------ exchange deviations

    def _salt(self, *parts: str) -> int:
        return zlib.crc32("|".join((str(self.seed), *parts)).encode())

    def _noise(self, t: np.ndarray, *salt: str, smooth: bool = True) -> np.ndarray:
        return _daily_noise(t, self._salt(*salt), smooth)

    def _share(
        self, coin: str, exchange: str, series: ShareSeries, t: np.ndarray, smooth: bool
    ) -> np.ndarray:
        """The exchange's share of the coin's `series` at times `t`, wobbling day to day."""
        attr, amp = ("oi_share", 0.03) if series == "oi" else ("volume_share", 0.15)
        total = sum(getattr(EXCHANGES[e], attr) for e in self.listing_exchanges(coin))
        wobble = 1.0 + amp * self._noise(t, coin, exchange, series, smooth=smooth)
        return getattr(EXCHANGES[exchange], attr) / total * wobble

    def _total_share(
        self,
        coin: str,
        exchanges: Iterable[str],
        series: ShareSeries,
        t: np.ndarray,
        smooth: bool,
    ) -> np.ndarray:
        listed = set(self.listing_exchanges(coin))
        shares = [self._share(coin, e, series, t, smooth) for e in exchanges if e in listed]
        return np.sum(shares, axis=0) if shares else np.zeros(len(t))

    def _funding_shift(self, coin: str, exchange: str, t: np.ndarray) -> np.ndarray:
        """The exchange's deviation from the coin's base 8h funding rate, in percent."""
        return EXCHANGES[exchange].funding_offset + 0.001 * self._noise(t, coin, exchange, "fr")

    # ------------------------------------------------------------------ per-instrument series

    def price_history(
        self,
        exchange: str,
        symbol: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        inst = self.instrument(exchange, symbol)
        coin = inst.base_asset
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, ("close", "volume"))

        def basis(t: np.ndarray) -> np.ndarray:
            return self._basis(inst, t)

        share = self._share(coin, exchange, "volume", bars.time, smooth=False) * inst.share
        return _frame(bars.time, **bars.scaled("close", basis), volume_usd=bars.v["volume"] * share)

    def _basis(self, inst: Instrument, t: np.ndarray) -> np.ndarray:
        """The instrument's price relative to the coin's at times `t` (smooth, so no jumps)."""
        premium = 1.0 + EXCHANGES[inst.exchange].basis + _KIND_BASIS[inst.kind]
        salt = (inst.base_asset, inst.exchange, inst.instrument_id, "basis")
        return premium + 0.0002 * self._noise(t, *salt)

    def _minute_index(self, coin: str, times_ms: np.ndarray) -> tuple[np.ndarray, _Minutes]:
        """Index of the minute containing each time (at or after `epoch_ms`), and the grid."""
        idx = (np.asarray(times_ms, dtype=np.int64) - self.epoch_ms) // MINUTE_MS
        if len(idx) and idx.min() < 0:
            raise ValueError("times before the market's epoch have no data")
        return idx, self._extend(coin, int(idx.max()) + 1 if len(idx) else 0)

    def price_at(self, exchange: str, symbol: str, times_ms: np.ndarray) -> np.ndarray:
        """The instrument's price at each instant, for events such as liquidations.

        Within a minute it moves linearly from the previous minute's close to this minute's
        close (each times the basis at that boundary), i.e. from the 1m bar's open to its
        close, so an event's price always lies within every `price_history` bar containing it.
        """
        inst = self.instrument(exchange, symbol)
        idx, minutes = self._minute_index(inst.base_asset, times_ms)
        close = minutes.arrays["close"]
        start = self.epoch_ms + idx * MINUTE_MS
        open_ = close[np.maximum(idx - 1, 0)] * self._basis(inst, start)
        close_ = close[idx] * self._basis(inst, start + MINUTE_MS)
        frac = (np.asarray(times_ms, dtype=np.int64) - start) / MINUTE_MS
        return open_ + (close_ - open_) * frac

    def long_liquidation_share(self, coin: str, times_ms: np.ndarray) -> np.ndarray:
        """Longs' share of the coin's liquidations in the minute of each time: high after a
        fall, low after a rise, as in `liquidation_history`."""
        idx, minutes = self._minute_index(coin, times_ms)
        long_ = minutes.arrays["liq_long"][idx].astype(np.float64)
        short = minutes.arrays["liq_short"][idx].astype(np.float64)
        return long_ / (long_ + short)

    def funding_history(
        self,
        exchange: str,
        symbol: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        """Funding OHLC in percent per the exchange's funding interval; empty for dated futures."""
        inst = self.instrument(exchange, symbol)
        coin = inst.base_asset
        if inst.kind == "dated":
            end_ms = start_ms
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, ("funding",))
        offset = _INVERSE_FUNDING_OFFSET if inst.kind == "inverse_perp" else 0.0

        def shift(t: np.ndarray) -> np.ndarray:
            return self._funding_shift(coin, exchange, t) + offset

        scale = EXCHANGES[exchange].funding_scale
        return _frame(bars.time, **bars.shifted("funding", shift, scale))

    def open_interest_history(
        self,
        exchange: str,
        symbol: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
        unit: Literal["usd", "coin"] = "usd",
    ) -> pd.DataFrame:
        inst = self.instrument(exchange, symbol)
        coin = inst.base_asset
        name = "oi" if unit == "usd" else "oi_coin"
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, (name,))

        def share(t: np.ndarray) -> np.ndarray:
            return self._share(coin, exchange, "oi", t, smooth=True) * inst.share

        return _frame(bars.time, **bars.scaled(name, share))

    def taker_history(
        self,
        exchange: str,
        symbol: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        """Taker flow; buy + sell equals the instrument's price-history `volume_usd`."""
        inst = self.instrument(exchange, symbol)
        coin = inst.base_asset
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, ("buy", "sell"))
        share = self._share(coin, exchange, "volume", bars.time, smooth=False) * inst.share
        return _frame(
            bars.time,
            taker_buy_volume_usd=bars.v["buy"] * share,
            taker_sell_volume_usd=bars.v["sell"] * share,
        )

    def long_short_history(
        self,
        exchange: str,
        symbol: str,
        kind: LongShortKind,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        """Long % (2 decimals), short = 100 − long, ratio = long / short, each at the bar close."""
        inst = self.instrument(exchange, symbol)
        coin = inst.base_asset
        name = _LONG_FIELD[kind]
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, (name,))
        bias = EXCHANGES[exchange].long_bias * (1.0 if kind == "global_account" else 0.5)
        noise = 1.5 * self._noise(bars.end, coin, exchange, symbol, kind)
        long_ = np.round(np.clip(bars.v[name] + bias + noise, 1.0, 99.0), 2)
        short = np.round(100.0 - long_, 2)
        return _frame(
            bars.time, long_percent=long_, short_percent=short, long_short_ratio=long_ / short
        )

    def liquidation_history(
        self,
        exchange: str,
        symbol: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        inst = self.instrument(exchange, symbol)
        coin = inst.base_asset
        fields = ("liq_long", "liq_short")
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, fields)
        share = self._share(coin, exchange, "liquidation", bars.time, smooth=False) * inst.share
        return _frame(
            bars.time,
            long_liquidation_usd=bars.v["liq_long"] * share,
            short_liquidation_usd=bars.v["liq_short"] * share,
        )

    # ------------------------------------------------------------------ per-coin aggregates

    def funding_weighted_history(
        self,
        coin: str,
        weight: Literal["oi", "volume"],
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        """OI- or volume-weighted funding over listing exchanges, in 8h-equivalent percent."""
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, ("funding",))
        exchanges = self.listing_exchanges(coin)

        def shift(t: np.ndarray) -> np.ndarray:
            weights = [self._share(coin, e, weight, t, smooth=True) for e in exchanges]
            shifts = [self._funding_shift(coin, e, t) for e in exchanges]
            return sum(w * s for w, s in zip(weights, shifts, strict=True)) / sum(weights)

        return _frame(bars.time, **bars.shifted("funding", shift, 1.0))

    def open_interest_aggregated(
        self,
        coin: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
        unit: Literal["usd", "coin"] = "usd",
    ) -> pd.DataFrame:
        """Open interest summed over every exchange listing the coin."""
        name = "oi" if unit == "usd" else "oi_coin"
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, (name,))

        def share(t: np.ndarray) -> np.ndarray:
            return self._total_share(coin, self.exchanges, "oi", t, smooth=True)

        return _frame(bars.time, **bars.scaled(name, share))

    def taker_aggregated(
        self,
        coin: str,
        exchanges: Iterable[str],
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
        unit: Literal["usd", "coin"] = "usd",
    ) -> pd.DataFrame:
        """Taker flow summed over `exchanges` (those not listing the coin contribute nothing)."""
        fields = ("buy", "sell") if unit == "usd" else ("buy_coin", "sell_coin")
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, fields)
        share = self._total_share(coin, exchanges, "volume", bars.time, smooth=False)
        return _frame(
            bars.time,
            aggregated_buy_volume_usd=bars.v[fields[0]] * share,
            aggregated_sell_volume_usd=bars.v[fields[1]] * share,
        )

    def liquidation_aggregated(
        self,
        coin: str,
        exchanges: Iterable[str],
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> pd.DataFrame:
        """Liquidations summed over `exchanges` (those not listing the coin contribute nothing)."""
        fields = ("liq_long", "liq_short")
        bars = self._coin_bars(coin, interval_ms, start_ms, end_ms, now_ms, fields)
        share = self._total_share(coin, exchanges, "liquidation", bars.time, smooth=False)
        return _frame(
            bars.time,
            aggregated_long_liquidation_usd=bars.v["liq_long"] * share,
            aggregated_short_liquidation_usd=bars.v["liq_short"] * share,
        )

    # ------------------------------------------------------------------ snapshots

    def current_funding(
        self, coin: str, now_ms: int | None = None
    ) -> list[tuple[Instrument, float]]:
        """Each perpetual's funding rate in the current minute, in percent per its interval."""
        now = _now() if now_ms is None else now_ms
        minute = now - now % MINUTE_MS
        rates: list[tuple[Instrument, float]] = []
        for exchange in self.listing_exchanges(coin):
            for inst in self._instruments[exchange].values():
                if inst.base_asset == coin and inst.kind != "dated":
                    bars = self.funding_history(
                        exchange, inst.instrument_id, MINUTE_MS, minute, minute + 1, now
                    )
                    rates.extend((inst, float(c)) for c in bars["close"])
        return rates

    def liquidation_totals(
        self, coin: str, exchanges: Iterable[str], window_ms: int, now_ms: int | None = None
    ) -> tuple[float, float]:
        """(long, short) liquidations in USD over the minutes in (now − window, now]."""
        now = _now() if now_ms is None else now_ms
        bars = self.liquidation_aggregated(
            coin, exchanges, MINUTE_MS, now - window_ms + 1, now + 1, now
        )
        return (
            float(bars["aggregated_long_liquidation_usd"].sum()),
            float(bars["aggregated_short_liquidation_usd"].sum()),
        )


def next_funding_time(instrument: Instrument, now_ms: int) -> int | None:
    """The next settlement (funding times are multiples of the interval from UTC midnight)."""
    if instrument.funding_interval is None:
        return None
    step = instrument.funding_interval * 3_600_000
    return (now_ms // step + 1) * step
