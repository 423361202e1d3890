"""The seeded 1-minute grid per coin that every synthetic market value derives from.

The grid starts at `epoch_ms`, so a bar has the same numbers whichever request window asks for
it: tests can page, overlap and re-fetch and compare exactly. Minutes are generated in
fixed-size chunks, each from its own seed and the previous chunk's final state, so the grid is
the same however far it has been extended.
"""

from __future__ import annotations

import math
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cg_assets.coinglass.plans import MINUTE_MS
from cg_assets.sim.bars import Bars, aggregate, aggregate_keys
from cg_assets.sim.instruments import COINS, CoinSpec

if TYPE_CHECKING:
    from cg_assets.sim.scenarios import Scenario

# 2**16 minutes (~45 days): small enough that the first request does not over-generate much,
# large enough that numpy's per-call overhead does not matter.
_CHUNK = 1 << 16

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


def seed_salt(seed: int, *parts: str) -> int:
    """A stable key for `parts` under `seed`, so that one seed gives one market: the grid seeds
    each coin's chunks with it and the market keys its per-exchange noise by it."""
    return zlib.crc32("|".join((str(seed), *parts)).encode())


class MinuteGrid:
    """The minute grids of every coin from `epoch_ms`, generated in whole chunks on demand.

    The scenario is drawn into each chunk as it is generated, hence fixed at construction.
    """

    def __init__(self, seed: int, epoch_ms: int, scenario: Scenario | None) -> None:
        if epoch_ms % MINUTE_MS:
            raise ValueError(f"epoch_ms must be on a minute boundary, got {epoch_ms}")
        self.seed = seed
        self.epoch_ms = epoch_ms
        self.scenario = scenario
        self._minutes: dict[str, _Minutes] = {}
        self._lock = threading.Lock()

    def extend(self, coin: str, minutes: int) -> _Minutes:
        """The coin's grid covering at least `minutes` minutes, generating whole chunks."""
        have = self._minutes.get(coin)
        if have is not None and have.length >= minutes:
            return have
        with self._lock:
            have = self._minutes.get(coin)
            parts = [] if have is None else [have.arrays]
            length, state = (0, _State()) if have is None else (have.length, have.state)
            while length < minutes:
                rng = np.random.default_rng(
                    [self.seed, seed_salt(self.seed, coin), length // _CHUNK]
                )
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

    def bars(
        self,
        coin: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int,
        fields: tuple[str, ...],
    ) -> Bars:
        """The coin-level aggregates of `fields` for each bar starting in the window."""
        first = -(-max(start_ms, self.epoch_ms) // interval_ms) * interval_ms
        times = np.arange(first, min(end_ms, now_ms + 1), interval_ms, dtype=np.int64)
        if len(times) == 0:
            return Bars(times, times, {k: np.empty(0) for k in aggregate_keys(fields)})
        available = (now_ms - self.epoch_ms) // MINUTE_MS + 1
        start_idx = (times - self.epoch_ms) // MINUTE_MS
        stop_idx = np.minimum(start_idx + interval_ms // MINUTE_MS, available)
        minutes = self.extend(coin, int(stop_idx[-1]))
        ends = self.epoch_ms + stop_idx * MINUTE_MS
        return Bars(times, ends, aggregate(minutes.arrays, start_idx, stop_idx, fields))

    def minute_index(self, coin: str, times_ms: np.ndarray) -> tuple[np.ndarray, _Minutes]:
        """Index of the minute containing each time (at or after `epoch_ms`), and the grid."""
        idx = (np.asarray(times_ms, dtype=np.int64) - self.epoch_ms) // MINUTE_MS
        if len(idx) and idx.min() < 0:
            raise ValueError("times before the market's epoch have no data")
        return idx, self.extend(coin, int(idx.max()) + 1 if len(idx) else 0)
