"""A deterministic synthetic crypto-derivatives market for the CoinGlass simulator.

Every value derives from the seeded minute grid of its coin (`cg_assets.sim.grid`), so a bar
has the same numbers whichever request window asks for it. Per-exchange series are the coin
series scaled by market shares and perturbed by a hash of (UTC day, exchange, instrument):
flows by a step per day, so bars up to 1d sum consistently with finer ones; levels (price, OI,
funding, ratios) by values interpolated between midnights, so they never jump at a day boundary
and a coarse bar closes where its last fine bar closes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from cg_assets.coinglass.plans import DAY_MS, MINUTE_MS
from cg_assets.sim.bars import Bars
from cg_assets.sim.grid import MinuteGrid, seed_salt
from cg_assets.sim.instruments import COINS, EXCHANGES, KIND_BASIS, Instrument, instruments_of

if TYPE_CHECKING:
    from cg_assets.sim.scenarios import Scenario

DEFAULT_EPOCH_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)

LongShortKind = Literal["global_account", "top_account", "top_position"]


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
        self._grid = MinuteGrid(seed, epoch_ms, scenario)
        self.seed = seed
        self.epoch_ms = epoch_ms
        self.scenario = scenario
        self.coins: tuple[str, ...] = tuple(COINS)
        self.exchanges: tuple[str, ...] = tuple(EXCHANGES)
        self._instruments: dict[str, dict[str, Instrument]] = {
            ex.name: {
                i.instrument_id: i for spec in COINS.values() for i in instruments_of(ex, spec)
            }
            for ex in EXCHANGES.values()
        }

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

    def _coin_bars(
        self,
        coin: str,
        interval_ms: int,
        start_ms: int,
        end_ms: int,
        now_ms: int | None,
        fields: tuple[str, ...],
    ) -> Bars:
        """The grid's bars of the window as of `now_ms`, or of the wall clock's now."""
        now = _now() if now_ms is None else now_ms
        return self._grid.bars(coin, interval_ms, start_ms, end_ms, now, fields)

    # ------------------------------------------------------------------ exchange deviations

    def _noise(self, t: np.ndarray, *salt: str, smooth: bool = True) -> np.ndarray:
        return _daily_noise(t, seed_salt(self.seed, *salt), smooth)

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
        premium = 1.0 + EXCHANGES[inst.exchange].basis + KIND_BASIS[inst.kind]
        salt = (inst.base_asset, inst.exchange, inst.instrument_id, "basis")
        return premium + 0.0002 * self._noise(t, *salt)

    def price_at(self, exchange: str, symbol: str, times_ms: np.ndarray) -> np.ndarray:
        """The instrument's price at each instant, for events such as liquidations.

        Within a minute it moves linearly from the previous minute's close to this minute's
        close (each times the basis at that boundary), i.e. from the 1m bar's open to its
        close, so an event's price always lies within every `price_history` bar containing it.
        """
        inst = self.instrument(exchange, symbol)
        idx, minutes = self._grid.minute_index(inst.base_asset, times_ms)
        close = minutes.arrays["close"]
        start = self.epoch_ms + idx * MINUTE_MS
        open_ = close[np.maximum(idx - 1, 0)] * self._basis(inst, start)
        close_ = close[idx] * self._basis(inst, start + MINUTE_MS)
        frac = (np.asarray(times_ms, dtype=np.int64) - start) / MINUTE_MS
        return open_ + (close_ - open_) * frac

    def long_liquidation_share(self, coin: str, times_ms: np.ndarray) -> np.ndarray:
        """Longs' share of the coin's liquidations in the minute of each time: high after a
        fall, low after a rise, as in `liquidation_history`."""
        idx, minutes = self._grid.minute_index(coin, times_ms)
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
