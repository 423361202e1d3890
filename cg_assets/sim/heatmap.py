"""CoinGlass-style model liquidation heatmaps, from synthetic leveraged positions.

CoinGlass does not publish how its three models work; what a client sees is a grid of price
levels over candles whose value is the USD that would be liquidated at that level. The
simulator produces the same shape from a simple, explainable position model: every candle
opens new leveraged longs and shorts at its close, sized by the volume traded in it and split
over leverage tiers; a position's liquidation price sits 1/leverage away from its entry. A
position adds its size to its level from its candle on, until a later candle's low (for longs)
or high (for shorts) reaches the level and liquidates it. The models differ only in the
leverage mix: model 1 balanced, model 2 crowded with high leverage, model 3 cautious.

Ranges map to (candle interval, candle count) as below; the real API's sizes are undocumented
(reference §7.11), so these are the simulator's choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS, MINUTE_MS
from cg_assets.sim.instruments import Instrument
from cg_assets.sim.market import SyntheticMarket

HEATMAP_RANGES: dict[str, tuple[int, int]] = {
    "12h": (5 * MINUTE_MS, 144),
    "24h": (5 * MINUTE_MS, 288),
    "3d": (15 * MINUTE_MS, 288),
    "7d": (30 * MINUTE_MS, 336),
    "30d": (4 * HOUR_MS, 180),
    "90d": (12 * HOUR_MS, 180),
    "180d": (DAY_MS, 180),
    "1y": (DAY_MS, 365),
}
# (leverage, share of new notional) per model.
MODEL_LEVERAGE: dict[int, tuple[tuple[int, float], ...]] = {
    1: ((10, 0.30), (25, 0.30), (50, 0.25), (100, 0.15)),
    2: ((25, 0.20), (50, 0.35), (100, 0.45)),
    3: ((5, 0.30), (10, 0.40), (20, 0.30)),
}
LEVELS = 120
OPEN_SHARE = 0.02  # of a candle's traded volume that opens new leveraged positions
_MIN_USD = 1.0  # cells below a dollar are left out, as empty cells are


@dataclass(frozen=True)
class ModelHeatmap:
    """The heatmap before formatting: level prices, (x, y, usd) cells and the candles."""

    y_axis: np.ndarray
    cells: np.ndarray  # float rows: candle index, level index, USD
    candles: pd.DataFrame  # time (ms), open, high, low, close, volume_usd


def model_heatmap(candles: pd.DataFrame, model: int, levels: int = LEVELS) -> ModelHeatmap:
    """Liquidation levels of the positions opened over `candles` under `model`'s leverage mix."""
    tiers = MODEL_LEVERAGE[model]
    n = len(candles)
    close = candles["close"].to_numpy(dtype=np.float64)
    if n == 0:
        return ModelHeatmap(np.empty(0), np.empty((0, 3)), candles)
    open_ = candles["open"].to_numpy(dtype=np.float64)
    high = candles["high"].to_numpy(dtype=np.float64)
    low = candles["low"].to_numpy(dtype=np.float64)
    volume = candles["volume_usd"].to_numpy(dtype=np.float64)
    long_share = 0.5 + 0.15 * np.sign(close - open_)  # buyers lean long into up candles
    min_lev = min(lev for lev, _ in tiers)
    y_axis = np.linspace(close.min() * (1 - 1 / min_lev), close.max() * (1 + 1 / min_lev), levels)

    entry = np.repeat(np.arange(n), len(tiers))
    lev = np.tile([lev for lev, _ in tiers], n).astype(np.float64)
    size = np.repeat(volume * OPEN_SHARE, len(tiers)) * np.tile([w for _, w in tiers], n)
    share = np.repeat(long_share, len(tiers))
    later = np.arange(n)[None, :] > entry[:, None]
    value = np.zeros((n + 1, levels))
    for is_long in (True, False):
        liq = close[entry] * (1 - 1 / lev) if is_long else close[entry] * (1 + 1 / lev)
        notional = size * (share if is_long else 1 - share)
        reached = (low[None, :] <= liq[:, None]) if is_long else (high[None, :] >= liq[:, None])
        reached &= later
        ends = np.where(reached.any(axis=1), reached.argmax(axis=1), n)
        y = np.rint((liq - y_axis[0]) / (y_axis[-1] - y_axis[0]) * (levels - 1)).astype(np.int64)
        inside = (y >= 0) & (y < levels)
        np.add.at(value, (entry[inside], y[inside]), notional[inside])
        np.add.at(value, (ends[inside], y[inside]), -notional[inside])
    value = np.cumsum(value[:n], axis=0)
    xs, ys = np.nonzero(value >= _MIN_USD)
    cells = np.column_stack([xs, ys, value[xs, ys]]).astype(np.float64)
    return ModelHeatmap(y_axis, cells, candles)


def _window(range_label: str, now_ms: int) -> tuple[int, int, int]:
    """(interval, start, end) of the closed candles a range covers at `now_ms`."""
    interval, count = HEATMAP_RANGES[range_label]
    end = now_ms - now_ms % interval
    return interval, end - count * interval, end


def pair_candles(
    market: SyntheticMarket, instrument: Instrument, range_label: str, now_ms: int
) -> pd.DataFrame:
    """The instrument's candles for `range_label`, ending with the last closed one."""
    interval, start, end = _window(range_label, now_ms)
    return market.price_history(
        instrument.exchange, instrument.instrument_id, interval, start, end, now_ms
    )


def coin_candles(market: SyntheticMarket, coin: str, range_label: str, now_ms: int) -> pd.DataFrame:
    """The coin's candles: prices of its first listing exchange's USDT perpetual, volume
    summed over every exchange listing it (what an aggregated heatmap is sized by)."""
    exchanges = market.listing_exchanges(coin)
    primary = next(
        i
        for i in market.instruments(exchanges[0])[exchanges[0]]
        if i.base_asset == coin and i.kind == "linear_perp"
    )
    candles = pair_candles(market, primary, range_label, now_ms)
    interval, start, end = _window(range_label, now_ms)
    taker = market.taker_aggregated(coin, exchanges, interval, start, end, now_ms)
    volume = taker["aggregated_buy_volume_usd"] + taker["aggregated_sell_volume_usd"]
    return candles.assign(volume_usd=volume.to_numpy())
