"""An in-process HTTP server that answers like CoinGlass V4 REST, from a SyntheticMarket.

It reproduces what a client has to cope with (reference §2–5): a string `code` in an envelope
served over HTTP 200 even for errors, a real 404 for unknown paths, HTTP 429 with the two
usage headers, the range and clamping rules of history endpoints, the plan gates, and the
per-endpoint mix of strings and numbers. Faults (latency, 503s, body errors, truncated JSON,
429 storms) can be switched on per instance, or from another process through `/_sim/*`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from email.message import Message
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from cg_assets.coinglass.plans import (
    DAY_MS,
    HOUR_MS,
    PLAN_LIMITS,
    Plan,
    history_days,
    interval_ms,
    min_plan_for_path,
    parse_plan,
)
from cg_assets.sim.heatmap import HEATMAP_RANGES, coin_candles, model_heatmap, pair_candles
from cg_assets.sim.http import (
    LoopbackServer,
    Response,
    faults_endpoint,
    json_response,
    plain_response,
)
from cg_assets.sim.instruments import COINS, Instrument, next_funding_time
from cg_assets.sim.liquidations import EventBatch, LiquidationFeed
from cg_assets.sim.market import LongShortKind, SyntheticMarket

# Current docs: default and maximum 1000 (older copies said 4500). What the real server does
# above the maximum is undocumented; clamping is the forgiving reading.
MAX_LIMIT = 1000
# liquidation/order (reference §5.6): the past 7 days only, at most 200 records per request.
ORDER_MAX_ROWS = 200
ORDER_HISTORY_MS = 7 * DAY_MS
RATE_WINDOW_MS = 60_000
_LOG_CAP = 100_000  # keeps a long-running demo server's request log bounded

JsonBody = dict[str, Any]


class ApiError(Exception):
    """An error CoinGlass reports in the body of an HTTP 200 response."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg


def _upgrade_plan() -> ApiError:
    return ApiError("401", "Upgrade plan")


# --------------------------------------------------------------------------- faults and stats


_RATE_KNOBS = ("error_5xx_rate", "body_500_rate", "malformed_json_rate")


@dataclass
class Faults:
    """Switchable failures; rates draw from a seeded RNG so a test run is reproducible.

    `storm_429` counts down: the next N API requests get HTTP 429 whatever the usage.
    """

    latency_s: float = 0.0
    error_5xx_rate: float = 0.0
    body_500_rate: float = 0.0
    malformed_json_rate: float = 0.0
    storm_429: int = 0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def hit(self, rate: float) -> bool:
        """Whether this request suffers a fault of probability `rate` (no draw when it is 0)."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def take_storm(self) -> bool:
        with self._lock:
            if self.storm_429 <= 0:
                return False
            self.storm_429 -= 1
            return True

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several knobs at once, all or none; ValueError names a bad knob or value."""
        checked = {name: _check_knob(name, value) for name, value in values.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)
            if "seed" in checked:
                self._rng = random.Random(self.seed)

    def clear(self) -> None:
        """Switch every fault off (the RNG keeps its position)."""
        self.update({"latency_s": 0.0, **dict.fromkeys(_RATE_KNOBS, 0.0), "storm_429": 0})

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


def _check_knob(name: str, value: Any) -> float | int:
    knobs = [f.name for f in fields(Faults) if f.init]
    if name not in knobs:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(knobs)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name in ("storm_429", "seed"):
        if int(value) != value or (name == "storm_429" and value < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        return int(value)
    if name in _RATE_KNOBS and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


@dataclass
class Stats:
    """What reached the router, so tests can assert how a client used the API.

    `requests`, `by_path` and `log` count requests that passed auth, the rate limit and the
    network-level faults; `rate_limited` counts every HTTP 429 sent. The log keeps the newest
    entries only once it is very long.
    """

    requests: int = 0
    rate_limited: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Wall-clock seconds of the first and last counted request: how long a client kept the
    # API busy, as the server saw it (benchmarks compare it with the rate-limit floor).
    first_at: float | None = None
    last_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, path: str, params: dict[str, str]) -> None:
        now = time.time()
        with self._lock:
            self.first_at = now if self.first_at is None else self.first_at
            self.last_at = now
            self.requests += 1
            self.by_path[path] += 1
            self.log.append((path, params))
            if len(self.log) > _LOG_CAP:
                del self.log[: _LOG_CAP // 2]

    def record_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def reset(self) -> None:
        """Zero in place, so references held by tests stay live."""
        with self._lock:
            self.requests = 0
            self.rate_limited = 0
            self.by_path.clear()
            self.log.clear()
            self.first_at = self.last_at = None

    def as_dict(self) -> JsonBody:
        with self._lock:
            return {
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "by_path": dict(self.by_path),
                "first_at": self.first_at,
                "last_at": self.last_at,
            }


class _SlidingWindow:
    """Per-bucket request times within the last minute (the real window type is undocumented)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[int]] = {}
        self._lock = threading.Lock()

    def _prune(self, bucket: str, now: int) -> deque[int]:
        hits = self._hits.setdefault(bucket, deque())
        while hits and hits[0] <= now - RATE_WINDOW_MS:
            hits.popleft()
        return hits

    def usage(self, bucket: str, now: int) -> int:
        with self._lock:
            return len(self._prune(bucket, now))

    def acquire(self, bucket: str, now: int, limit: int) -> tuple[bool, int]:
        """(admitted, usage after this request); a rejected request is not counted."""
        with self._lock:
            hits = self._prune(bucket, now)
            if len(hits) >= limit:
                return False, len(hits)
            hits.append(now)
            return True, len(hits)


# --------------------------------------------------------------------------- request parsing


@dataclass(frozen=True)
class _Window:
    interval_ms: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class _Call:
    """One routed API request: its parameters and the caller's plan, at the server's `now`.

    `feed` returns the server's liquidation feed, created on first use: most requests never
    need one.
    """

    market: SyntheticMarket
    params: dict[str, str]
    plan: Plan
    now: int
    feed: Callable[[], LiquidationFeed]

    def require(self, name: str) -> str:
        value = self.params.get(name, "").strip()
        if not value:
            raise ApiError("400", f"Required String parameter '{name}' is not present")
        return value

    def integer(self, name: str) -> int | None:
        raw = self.params.get(name, "").strip()
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ApiError(
                "400",
                f"Failed to convert value of type 'java.lang.String' to required type 'long'; "
                f'For input string: "{raw}"',
            ) from None

    def window(self) -> _Window:
        """The bars a history request covers, by the range rules of reference §4."""
        interval = self.require("interval")
        try:
            step = interval_ms(interval)
        except ValueError as exc:
            raise ApiError("400", str(exc)) from None
        try:
            days = history_days(self.plan, interval)
        except ValueError:
            # How the real API rejects an interval below the plan's floor is undocumented;
            # "Upgrade plan" is what it says for every other plan restriction.
            raise _upgrade_plan() from None
        limit = self.integer("limit")
        if limit is not None and limit < 1:
            raise ApiError("400", f"limit must be at least 1, got {limit}")
        span = step * min(limit or MAX_LIMIT, MAX_LIMIT)
        start, end = _truncate_s(self.integer("start_time")), _truncate_s(self.integer("end_time"))
        if start is None:
            end = self.now if end is None else end
            start = end - span
        if days is not None:
            start = max(start, self.now - days * DAY_MS)
        start = -(-start // step) * step
        end = min(start + span if end is None else end, self.now)
        return _Window(step, start, min(end, start + span))

    def coin(self) -> str:
        coin = self.require("symbol")
        if coin not in self.market.coins:
            raise ApiError("400", f"symbol '{coin}' is not supported; pass a coin such as BTC")
        return coin

    def exchange_list(self) -> list[str]:
        names = [n.strip() for n in self.require("exchange_list").split(",") if n.strip()]
        for name in names:
            self.check_exchange(name)
        return names

    def check_exchange(self, name: str) -> None:
        if name not in self.market.exchanges:
            raise ApiError("400", f"exchange '{name}' is not supported")

    def instrument(self) -> Instrument:
        exchange = self.require("exchange")
        symbol = self.require("symbol")
        self.check_exchange(exchange)
        try:
            return self.market.instrument(exchange, symbol)
        except KeyError:
            raise ApiError(
                "400", f"symbol '{symbol}' is not listed on exchange '{exchange}'"
            ) from None

    def amount(self, name: str) -> float:
        raw = self.require(name)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not value >= 0 or math.isinf(value):
            raise ApiError("400", f"{name} must be a non-negative USD amount, got '{raw}'")
        return value

    def unit(self) -> Literal["usd", "coin"]:
        unit = self.params.get("unit", "usd").strip().lower() or "usd"
        if unit not in ("usd", "coin"):
            raise ApiError("400", f"unit must be 'usd' or 'coin', got '{unit}'")
        return "usd" if unit == "usd" else "coin"


def _truncate_s(ms: int | None) -> int | None:
    return None if ms is None else ms - ms % 1000


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

Route = Callable[[_Call], Any]


def _funding_history(call: _Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.funding_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    return _rows(frame, _ohlc_cols(True, 6))


def _funding_weighted(weight: Literal["oi", "volume"]) -> Route:
    def route(call: _Call) -> Any:
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


def _oi_history(call: _Call) -> Any:
    inst, w, unit = call.instrument(), call.window(), call.unit()
    frame = call.market.open_interest_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now, unit
    )
    return _rows(frame, _oi_cols(unit))


def _oi_aggregated(call: _Call) -> Any:
    coin, w, unit = call.coin(), call.window(), call.unit()
    frame = call.market.open_interest_aggregated(
        coin, w.interval_ms, w.start_ms, w.end_ms, call.now, unit
    )
    return _rows(frame, _oi_cols(unit))


def _taker_history(call: _Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.taker_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    cols = [(c, c, True, 4) for c in ("taker_buy_volume_usd", "taker_sell_volume_usd")]
    return _rows(frame, cols)


def _taker_aggregated(call: _Call) -> Any:
    exchanges, coin, w, unit = call.exchange_list(), call.coin(), call.window(), call.unit()
    frame = call.market.taker_aggregated(
        coin, exchanges, w.interval_ms, w.start_ms, w.end_ms, call.now, unit
    )
    cols = [(c, c, False, 4) for c in ("aggregated_buy_volume_usd", "aggregated_sell_volume_usd")]
    return _rows(frame, cols)


def _long_short(kind: LongShortKind) -> Route:
    def route(call: _Call) -> Any:
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


def _liquidation_history(call: _Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.liquidation_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    return _rows(
        frame, [(c, c, True, 5) for c in ("long_liquidation_usd", "short_liquidation_usd")]
    )


def _liquidation_aggregated(call: _Call) -> Any:
    exchanges, coin, w = call.exchange_list(), call.coin(), call.window()
    frame = call.market.liquidation_aggregated(
        coin, exchanges, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    cols = [
        (c, c, False, 5)
        for c in ("aggregated_long_liquidation_usd", "aggregated_short_liquidation_usd")
    ]
    return _rows(frame, cols)


def _price_history(call: _Call) -> Any:
    inst, w = call.instrument(), call.window()
    frame = call.market.price_history(
        inst.exchange, inst.instrument_id, w.interval_ms, w.start_ms, w.end_ms, call.now
    )
    decimals = COINS[inst.base_asset].price_decimals
    return _rows(frame, [*_ohlc_cols(True, decimals), ("volume_usd", "volume_usd", True, 4)])


def _funding_exchange_list(call: _Call) -> Any:
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


def _supported_exchange_pairs(call: _Call) -> Any:
    exchange = call.params.get("exchange", "").strip() or None
    if exchange is not None:
        call.check_exchange(exchange)
    listing = call.market.instruments(exchange)
    return {name: [i.as_pair() for i in instruments] for name, instruments in listing.items()}


def _subscription(call: _Call) -> Any:
    expire = (call.now // DAY_MS + 365) * DAY_MS
    return {"level": call.plan.name, "expire_time": expire, "expired": False}


_LIQUIDATION_RANGES = {"1h": HOUR_MS, "4h": 4 * HOUR_MS, "12h": 12 * HOUR_MS, "24h": DAY_MS}


def _liquidation_coin_list(call: _Call) -> Any:
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


def _liquidation_exchange_list(call: _Call) -> Any:
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


def _liquidation_orders(call: _Call) -> Any:
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

    def route(call: _Call) -> Any:
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


# --------------------------------------------------------------------------- HTTP plumbing


def _envelope_error(code: str, msg: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(200, {"code": code, "msg": msg}, headers)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SimulatorServer(LoopbackServer):
    """CoinGlass V4 REST on a local ephemeral port, served from a SyntheticMarket.

    Keys: when `keys` (API key -> plan name) is given only those keys are valid and any other
    key gets code 400 "Invalid API key provided"; when it is None any non-blank key is served
    at `plan`. A request without a key gets code 401 "API key missing." when `require_key`,
    otherwise it is served at `plan` and rate-limited as "anonymous". The limit per minute is
    the plan's unless `rate_limit_per_min` overrides it for every key; every response past
    authentication (429s, body errors and 404s included) carries the usage headers, while key
    errors, 405s and injected 503s have no usage to report. `clock` returns milliseconds;
    injecting one makes "now", ranges and the rate window deterministic.

    `feed` serves `liquidation/order`; share it with a WsSimulator so both protocols report
    the same events, and give it the server's clock, since the 7-day window is the server's.
    Without one, a feed on the server's market and clock is created on the first order
    request (so it holds only events generated from then on).
    """

    label = "the simulator"

    def __init__(
        self,
        market: SyntheticMarket | None = None,
        *,
        plan: str = "professional",
        keys: Mapping[str, str] | None = None,
        require_key: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], int] | None = None,
        rate_limit_per_min: int | None = None,
        fault_seed: int = 0,
        feed: LiquidationFeed | None = None,
    ) -> None:
        self.market = market or SyntheticMarket()
        self._feed = feed
        self._feed_lock = threading.Lock()
        self.plan = parse_plan(plan)
        self.keys = None if keys is None else {k: parse_plan(v) for k, v in keys.items()}
        self.require_key = require_key
        self.rate_limit_per_min = rate_limit_per_min
        self.clock = clock or _wall_clock_ms
        self.faults = Faults(seed=fault_seed)
        self.stats = Stats()
        self._limiter = _SlidingWindow()
        super().__init__(host, port)

    def reset_stats(self) -> None:
        self.stats.reset()

    @property
    def feed(self) -> LiquidationFeed:
        with self._feed_lock:
            if self._feed is None:
                self._feed = LiquidationFeed(self.market, clock=self.clock)
            return self._feed

    # ------------------------------------------------------------------ request handling

    def handle_http(self, method: str, target: str, headers: Message, body: bytes) -> Response:
        return self.handle(method, target, headers.get("CG-API-KEY", ""), body)

    def handle(self, method: str, target: str, api_key: str = "", body: bytes = b"") -> Response:
        """Answer one HTTP request; the socket layer only moves bytes."""
        url = urlsplit(target)
        params = dict(reversed(parse_qsl(url.query, keep_blank_values=True)))  # first wins
        if url.path.startswith("/_sim/"):
            return self._admin(method, url.path, body)
        if method != "GET":
            return plain_response(405, "Method Not Allowed", {"Allow": "GET"})
        if self.faults.latency_s > 0:
            time.sleep(self.faults.latency_s)
        if self.faults.hit(self.faults.error_5xx_rate):
            return plain_response(503, "Service Temporarily Unavailable")
        return self._api(url.path, params, api_key.strip())

    def _identify(self, api_key: str) -> tuple[str, Plan] | ApiError:
        """(rate-limit bucket, plan) for the key, or the error CoinGlass gives for it."""
        if not api_key:
            if self.require_key:
                return ApiError("401", "API key missing.")
            return "anonymous", self.plan
        if self.keys is None:
            return api_key, self.plan
        if api_key in self.keys:
            return api_key, self.keys[api_key]
        return ApiError("400", "Invalid API key provided")

    def _limit(self, plan: Plan) -> int:
        return self.rate_limit_per_min or PLAN_LIMITS[plan].requests_per_minute

    def _api(self, path: str, params: dict[str, str], api_key: str) -> Response:
        now = self.clock()
        identity = self._identify(api_key)
        if isinstance(identity, ApiError):
            return _envelope_error(identity.code, identity.msg)
        bucket, plan = identity
        limit = self._limit(plan)
        if self.faults.take_storm():
            admitted, used = False, self._limiter.usage(bucket, now)
        else:
            admitted, used = self._limiter.acquire(bucket, now, limit)
        headers = {"API-KEY-MAX-LIMIT": str(limit), "API-KEY-USE-LIMIT": str(used)}
        if not admitted:
            self.stats.record_rate_limited()
            return json_response(429, {"code": "429", "msg": "Too Many Requests"}, headers)
        self.stats.record(path, params)
        if self.faults.hit(self.faults.body_500_rate):
            return _envelope_error("500", "Server Error", headers)
        response = self._route(
            path, _Call(self.market, params, plan, now, lambda: self.feed), headers
        )
        if self.faults.hit(self.faults.malformed_json_rate):
            return Response(response.status, response.body[: len(response.body) // 2], headers)
        return response

    def _route(self, path: str, call: _Call, headers: dict[str, str]) -> Response:
        if min_plan_for_path(path).rank > call.plan.rank:
            return _envelope_error("401", "Upgrade plan", headers)
        route = ROUTES.get(path)
        if route is None:
            return plain_response(404, "Not Found", headers)
        try:
            data = route(call)
        except ApiError as exc:
            return _envelope_error(exc.code, exc.msg, headers)
        return json_response(200, {"code": "0", "msg": "success", "data": data}, headers)

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        """Out-of-process control: `POST /_sim/faults` (JSON knobs), `GET /_sim/stats`,
        `POST /_sim/liquidation` (one order now: {"coin", "usd", "side"?, "exchange"?}, answered
        with the order as generated, so a benchmark knows when it entered the feed)."""
        if path == "/_sim/faults" and method in ("GET", "POST"):
            return faults_endpoint(self.faults, method, body)
        if path == "/_sim/stats" and method == "GET":
            return json_response(200, self.stats.as_dict())
        if path == "/_sim/stats/reset" and method == "POST":
            self.reset_stats()
            return json_response(200, self.stats.as_dict())
        if path == "/_sim/liquidation" and method == "POST":
            return self._inject(body)
        return plain_response(404, "Not Found")

    def _inject(self, body: bytes) -> Response:
        try:
            order = json.loads(body or b"{}")
            if not isinstance(order, dict) or "coin" not in order or "usd" not in order:
                raise ValueError('expected {"coin": ..., "usd": ...}')
            [event] = self.feed.burst(
                str(order["coin"]),
                float(order["usd"]),
                1,
                side=order.get("side"),
                exchange=order.get("exchange"),
            )
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, dataclasses.asdict(event))
