"""The CoinGlass V4 REST endpoints the simulator serves: each route turns a checked request
into the rows the real API sends, with its per-endpoint mix of strings and numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS
from cg_assets.sim.heatmap import HEATMAP_RANGES, coin_candles, model_heatmap, pair_candles
from cg_assets.sim.instruments import COINS, next_funding_time
from cg_assets.sim.liquidation_events import EventBatch
from cg_assets.sim.market import LongShortKind
from cg_assets.sim.rest_request import ApiError, Call, JsonBody

# liquidation/order (reference §5.6): the past 7 days only, at most 200 records per request.
ORDER_MAX_ROWS = 200
ORDER_HISTORY_MS = 7 * DAY_MS


# --------------------------------------------------------------------------- row formatting

# (API field, frame column, sent as a string?, decimals)
_Col = tuple[str, str, bool, int]


def _ohlc_cols(as_string: bool, decimals: int) -> list[_Col]:
    return [(k, k, as_string, decimals) for k in ("open", "high", "low", "close")]


def _strings(values: np.ndarray, decimals: int) -> list[str]:
    """Decimal strings without trailing zeros, as the API prints them ("93404.9", "-0.0051")."""
    out = []
    for x in values.tolist():
        s = f"{x:.{decimals}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        out.append("0" if s == "-0" else s)
    return out


def _numbers(values: np.ndarray, decimals: int) -> list[float] | list[int]:
    if decimals == 0:
        return np.round(values).astype(np.int64).tolist()
    return np.round(values, decimals).tolist()


def _rows(frame: pd.DataFrame, cols: Sequence[_Col]) -> list[JsonBody]:
    names = ["time", *(c[0] for c in cols)]
    columns = [frame["time"].tolist()]
    for _, column, as_string, decimals in cols:
        values = frame[column].to_numpy()
        columns.append(_strings(values, decimals) if as_string else _numbers(values, decimals))
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


# --------------------------------------------------------------------------- endpoints

Route = Callable[[Call], Any]


def _funding_history(call: Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.funding_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    return _rows(frame, _ohlc_cols(True, 6))


def _funding_weighted(weight: Literal["oi", "volume"]) -> Route:
    def route(call: Call) -> Any:
        coin, w = call.coin(), call.window()
        frame = call.market.funding_weighted_history(
            coin, weight, w.interval_ms, w.start_ms, w.end_ms, call.now
        )
        return _rows(frame, _ohlc_cols(True, 6))

    return route


def _oi_cols(unit: str) -> list[_Col]:
    """OHLC as strings per the docs, but `close` a number, as observed live (reference §5.3)."""
    decimals = 0 if unit == "usd" else 4
    return [*_ohlc_cols(True, decimals)[:3], ("close", "close", False, decimals)]


def _oi_history(call: Call) -> Any:
    inst, w, unit = call.instrument(), call.window(), call.unit()
    frame = call.market.open_interest_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now, unit
    )
    return _rows(frame, _oi_cols(unit))


def _oi_aggregated(call: Call) -> Any:
    coin, w, unit = call.coin(), call.window(), call.unit()
    frame = call.market.open_interest_aggregated(
        coin, w.interval_ms, w.start_ms, w.end_ms, call.now, unit
    )
    return _rows(frame, _oi_cols(unit))


def _taker_history(call: Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.taker_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    cols = [(c, c, True, 4) for c in ("taker_buy_volume_usd", "taker_sell_volume_usd")]
    return _rows(frame, cols)


def _taker_aggregated(call: Call) -> Any:
    exchanges, coin, w, unit = call.exchange_list(), call.coin(), call.window(), call.unit()
    frame = call.market.taker_aggregated(
        coin, exchanges, w.interval_ms, w.start_ms, w.end_ms, call.now, unit
    )
    cols = [(c, c, False, 4) for c in ("aggregated_buy_volume_usd", "aggregated_sell_volume_usd")]
    return _rows(frame, cols)


def _long_short(kind: LongShortKind) -> Route:
    def route(call: Call) -> Any:
        inst, w = call.instrument(), call.window()
        frame = call.market.long_short_history(
            inst.exchange, inst.instrument_id, kind, w.interval_ms, w.start_ms, w.end_ms, call.now
        )
        cols = [
            (f"{kind}_{c}", c, False, 2)
            for c in ("long_percent", "short_percent", "long_short_ratio")
        ]
        return _rows(frame, cols)

    return route


def _liquidation_history(call: Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.liquidation_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    return _rows(
        frame, [(c, c, True, 5) for c in ("long_liquidation_usd", "short_liquidation_usd")]
    )


def _liquidation_aggregated(call: Call) -> Any:
    exchanges, coin, w = call.exchange_list(), call.coin(), call.window()
    frame = call.market.liquidation_aggregated(
        coin, exchanges, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    cols = [
        (c, c, False, 5)
        for c in ("aggregated_long_liquidation_usd", "aggregated_short_liquidation_usd")
    ]
    return _rows(frame, cols)


def _price_history(call: Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.price_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    decimals = COINS[inst.base_asset].price_decimals
    return _rows(frame, [*_ohlc_cols(True, decimals), ("volume_usd", "volume_usd", True, 4)])


def _funding_exchange_list(call: Call) -> Any:
    out = []
    for coin in call.market.coins:
        margin: dict[str, list[JsonBody]] = {"stablecoin_margin_list": [], "token_margin_list": []}
        for inst, rate in call.market.current_funding(coin, call.now):
            key = "token_margin_list" if inst.kind == "inverse_perp" else "stablecoin_margin_list"
            margin[key].append(
                {
                    "exchange": inst.exchange,
                    "funding_rate_interval": inst.funding_interval,
                    "funding_rate": round(rate, 6),
                    "next_funding_time": next_funding_time(inst, call.now),
                }
            )
        out.append({"symbol": coin, **margin})
    return out


def _supported_exchange_pairs(call: Call) -> Any:
    exchange = call.params.get("exchange", "").strip() or None
    if exchange is not None:
        call.check_exchange(exchange)
    listing = call.market.instruments(exchange)
    return {name: [i.as_pair() for i in instruments] for name, instruments in listing.items()}


def _subscription(call: Call) -> Any:
    expire = (call.now // DAY_MS + 365) * DAY_MS
    return {"level": call.plan.name, "expire_time": expire, "expired": False}


_LIQUIDATION_RANGES = {"1h": HOUR_MS, "4h": 4 * HOUR_MS, "12h": 12 * HOUR_MS, "24h": DAY_MS}


def _liquidation_coin_list(call: Call) -> Any:
    exchange = call.require("exchange")
    call.check_exchange(exchange)
    rows = []
    for coin in call.market.coins:
        if exchange not in call.market.listing_exchanges(coin):
            continue
        row: JsonBody = {"symbol": coin}
        for label, window in _LIQUIDATION_RANGES.items():
            long_, short = call.market.liquidation_totals(coin, [exchange], window, call.now)
            row[f"liquidation_usd_{label}"] = round(long_ + short, 2)
            row[f"long_liquidation_usd_{label}"] = round(long_, 2)
            row[f"short_liquidation_usd_{label}"] = round(short, 2)
        rows.append(row)
    return rows


def _liquidation_exchange_list(call: Call) -> Any:
    label = call.require("range")
    if label not in _LIQUIDATION_RANGES:
        raise ApiError("400", f"range must be one of {', '.join(_LIQUIDATION_RANGES)}")
    coins = [call.coin()] if call.params.get("symbol") else list(call.market.coins)
    totals = {name: [0.0, 0.0] for name in call.market.exchanges}
    for coin in coins:
        for name in call.market.listing_exchanges(coin):
            long_, short = call.market.liquidation_totals(
                coin, [name], _LIQUIDATION_RANGES[label], call.now
            )
            totals[name][0] += long_
            totals[name][1] += short
    rows = [_liquidation_row(name, long_, short) for name, (long_, short) in totals.items()]
    rows.sort(key=lambda r: -r["liquidation_usd"])
    all_long = sum(t[0] for t in totals.values())
    all_short = sum(t[1] for t in totals.values())
    return [_liquidation_row("All", all_long, all_short), *rows]


def _liquidation_row(exchange: str, long_: float, short: float) -> JsonBody:
    return {
        "exchange": exchange,
        "liquidation_usd": round(long_ + short, 2),
        "long_liquidation_usd": round(long_, 2),
        "short_liquidation_usd": round(short, 2),
    }


def _liquidation_orders(call: Call) -> Any:
    """Single liquidations of a coin on one exchange, from the same feed the WebSocket pushes.

    The real ordering and paging rules are undocumented. Here the window is
    start_time <= time < end_time (the history endpoints' rule, at millisecond precision),
    start is clamped to 7 days ago, and the newest 200 matching rows come back newest first,
    so a client pages back by lowering end_time to the oldest time it received.
    """
    exchange = call.require("exchange")
    call.check_exchange(exchange)
    coin = call.coin()
    threshold = call.amount("min_liquidation_amount")
    earliest = call.now - ORDER_HISTORY_MS
    start, end = call.integer("start_time"), call.integer("end_time")
    start = earliest if start is None else max(start, earliest)
    end = call.now + 1 if end is None else min(end, call.now + 1)
    feed = call.feed()
    feed.advance()
    batch = feed.query(start, end, coin, exchange, threshold, newest=ORDER_MAX_ROWS)
    return _order_rows(batch.take(slice(None, None, -1)))


def _order_rows(batch: EventBatch) -> list[JsonBody]:
    """REST rows; side is the forced order's direction: 2 = Sell (a long was liquidated),
    1 = Buy (a short was), the reverse of the WebSocket's codes."""
    return [
        {
            "exchange_name": exchange.upper(),
            "symbol": pair,
            "base_asset": coin,
            "price": price,
            "usd_value": usd,
            "side": 2 if long_ else 1,
            "time": t,
        }
        for exchange, pair, coin, price, usd, long_, t in zip(
            batch.exchanges(),
            batch.pairs(),
            batch.coins(),
            batch.price.tolist(),
            batch.usd_value.tolist(),
            batch.long.tolist(),
            batch.time.tolist(),
            strict=True,
        )
    ]


def _model_heatmap(model: int, aggregated: bool) -> Route:
    """liquidation/(aggregated-)heatmap/modelN (reference §5.6): `data` is an object of level
    prices, [candle, level, USD] cells and candles whose time is in SECONDS, prices strings."""

    def route(call: Call) -> Any:
        if aggregated:
            coin = call.coin()
        else:
            inst = call.instrument()
            coin = inst.base_asset
        label = call.require("range")
        if label not in HEATMAP_RANGES:
            raise ApiError("400", f"range must be one of {', '.join(HEATMAP_RANGES)}")
        candles = (
            coin_candles(call.market, coin, label, call.now)
            if aggregated
            else pair_candles(call.market, inst, label, call.now)
        )
        heat = model_heatmap(candles, model)
        decimals = COINS[coin].price_decimals
        columns = [
            _strings(candles[c].to_numpy(), decimals) for c in ("open", "high", "low", "close")
        ]
        columns.append(_strings(candles["volume_usd"].to_numpy(), 4))
        return {
            "y_axis": np.round(heat.y_axis, decimals).tolist(),
            "liquidation_leverage_data": [
                [int(x), int(y), round(v, 2)] for x, y, v in heat.cells.tolist()
            ],
            "price_candlesticks": [
                [t // 1000, *row]
                for t, *row in zip(candles["time"].tolist(), *columns, strict=True)
            ],
        }

    return route


ROUTES: dict[str, Route] = {
    "/api/futures/funding-rate/history": _funding_history,
    "/api/futures/funding-rate/oi-weight-history": _funding_weighted("oi"),
    "/api/futures/funding-rate/vol-weight-history": _funding_weighted("volume"),
    "/api/futures/funding-rate/exchange-list": _funding_exchange_list,
    "/api/futures/open-interest/history": _oi_history,
    "/api/futures/open-interest/aggregated-history": _oi_aggregated,
    "/api/futures/v2/taker-buy-sell-volume/history": _taker_history,
    "/api/futures/taker-buy-sell-volume/history": _taker_history,
    "/api/futures/aggregated-taker-buy-sell-volume/history": _taker_aggregated,
    "/api/futures/global-long-short-account-ratio/history": _long_short("global_account"),
    "/api/futures/top-long-short-account-ratio/history": _long_short("top_account"),
    "/api/futures/top-long-short-position-ratio/history": _long_short("top_position"),
    "/api/futures/liquidation/history": _liquidation_history,
    "/api/futures/liquidation/aggregated-history": _liquidation_aggregated,
    "/api/futures/liquidation/coin-list": _liquidation_coin_list,
    "/api/futures/liquidation/exchange-list": _liquidation_exchange_list,
    "/api/futures/liquidation/order": _liquidation_orders,
    "/api/futures/price/history": _price_history,
    **{
        f"/api/futures/liquidation/{kind}/model{n}": _model_heatmap(n, kind != "heatmap")
        for kind in ("heatmap", "aggregated-heatmap")
        for n in (1, 2, 3)
    },
    "/api/futures/supported-coins": lambda call: list(call.market.coins),
    "/api/futures/supported-exchanges": lambda call: list(call.market.exchanges),
    "/api/futures/supported-exchange-pairs": _supported_exchange_pairs,
    "/api/user/account/subscription": _subscription,
}
