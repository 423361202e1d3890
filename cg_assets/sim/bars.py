"""Bar aggregation: how a run of a coin's minutes becomes one bar.

Level fields (price, open interest, funding) give OHLC that opens at the previous minute's
close, so consecutive bars chain; flows (volume, taker sides, liquidations) are summed, so
coarse bars add up to the fine ones; positioning percentages take the bar's last minute.
`Bars.scaled` and `Bars.shifted` then turn coin-level OHLC into an exchange's or instrument's
without breaking those properties, though the factor between them varies over time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

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


def aggregate(
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


TimeFn = Callable[[np.ndarray], np.ndarray]
_OHLC = ("open", "high", "low", "close")


@dataclass(frozen=True)
class Bars:
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


def aggregate_keys(fields: Iterable[str]) -> list[str]:
    return [
        f"{name}.{part}" if name in _OHLC_FIELDS else name
        for name in fields
        for part in (_OHLC if name in _OHLC_FIELDS else ("",))
    ]
