"""Pure translation of CoinGlass payloads into spool event dicts: no I/O, no clock, no state.

Both WebSocket payload styles exist in the wild (reference §6): the long-standing
`liquidationOrders` channel with camelCase items and the newer `liquidation_orders` with
snake_case items, with the same side codes (1 = a long was liquidated, 2 = a short). The REST
`liquidation/order` rows (§5.6) use the opposite convention (the forced order's direction:
1 = Buy closes a short, 2 = Sell closes a long) and upper-case exchange names. Everything is
normalised to one event shape so that a WebSocket event and its REST copy get the same
`event_id`, which is what lets the gap filler's rows de-duplicate against the stream.

Every WebSocket item is validated here, before it can reach the spool (`ws_sidecar.validate`
says what passes): a rejected item becomes a `Reject` naming the field and the value, which
the recorder writes to the quarantine file.

This runs once per event at tens of thousands of events a second, hence the plain dicts, the
cached exchange names, the short hash, and reasons worked out only once an item has failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Literal

from ws_sidecar.validate import DEFAULT_WINDOW, EventWindow, is_text

LIQUIDATION_CHANNELS = frozenset({"liquidationOrders", "liquidation_orders"})

# Numbers in every capture; the string spellings cost nothing to accept.
WS_SIDES = {1: "long", 2: "short", "1": "long", "2": "short"}
REST_SIDES = {2: "long", 1: "short"}

# CoinGlass's display names (supported-exchanges, reference §5.8); REST spells them in capitals.
KNOWN_EXCHANGES = (
    "Binance", "OKX", "Bybit", "Bitget", "Hyperliquid", "HTX", "Bitmex", "Bitfinex", "Deribit",
    "Gate", "Kraken", "KuCoin", "CME", "dYdX", "CoinEx", "BingX", "Coinbase", "Gemini",
    "Crypto.com", "Bitunix", "MEXC", "WhiteBIT", "Aster", "Lighter", "EdgeX", "Drift", "Paradex",
    "Extended", "ApeX Omni",
)  # fmt: skip
_BY_FOLDED = {name.casefold(): name for name in KNOWN_EXCHANGES}
_display_cache: dict[str, str] = {}
_CACHE_LIMIT = 4096  # a hostile stream of made-up names must not grow memory without bound
_INF = float("inf")
_CAMEL_KEYS = ("exName", "volUsd", "baseAsset")
_SNAKE_KEYS = ("exchange", "volume_usd", "base_asset")
_ITEM_RE = re.compile(r"\{[^{}]*\}")


class InvalidItem(ValueError):
    """A pushed item that is not a usable liquidation; the message names the field and value.
    `malformed` is True when the item lacks a liquidation's fields or types altogether (as
    opposed to carrying implausible values)."""

    def __init__(self, reason: str, malformed: bool) -> None:
        super().__init__(reason)
        self.malformed = malformed


@dataclass(frozen=True, slots=True)
class Reject:
    """One item of a push that did not become an event: why, and the item as received."""

    reason: str
    raw: Any
    malformed: bool


@dataclass(slots=True)
class Frame:
    """One received WebSocket data message (pongs are the connection's business), classified.

    `kind` is "events" (a liquidation push; `events` holds the usable items and `rejects`
    the items that were not), "ignored" (well-formed JSON that is not a liquidation push, e.g.
    an unknown channel or a server notice) or "malformed".
    """

    kind: Literal["events", "ignored", "malformed"]
    events: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    detail: str = ""
    # The source text of each event's item, when it can be cut out of the message without
    # ambiguity, so the spool stores the original without serialising it again; else None.
    raw_texts: list[str] | None = None


def display_exchange(name: str) -> str:
    """CoinGlass's display name for `name` in any case ("BINANCE" -> "Binance"); an unknown
    name in all capitals or all lower case is title-cased, any other spelling is kept."""
    hit = _display_cache.get(name)
    if hit is None:
        hit = _BY_FOLDED.get(name.casefold())
        if hit is None:
            hit = name.title() if name.isupper() or name.islower() else name
        if len(_display_cache) < _CACHE_LIMIT:
            _display_cache[name] = hit
    return hit


def event_id(
    exchange: str, pair: str, time_ms: int, price: float, side: str, usd_value: float
) -> str:
    """Deterministic id of one liquidation: 16 hex digits of blake2b over the normalised fields
    (exchange case-folded, price and usd value rounded to 8 significant digits), so copies of
    an event from the stream, from REST and from a re-read spool all collide."""
    key = (
        f"{exchange.casefold()}|{pair}|{int(time_ms)}|{float(price):.8g}|{side}"
        f"|{float(usd_value):.8g}"
    )
    return blake2b(key.encode(), digest_size=8).hexdigest()


def normalize_ws_item(
    item: Any, conn_id: str, received_at: int, window: EventWindow = DEFAULT_WINDOW
) -> dict[str, Any]:
    """A WebSocket `liquidationOrders` / `liquidation_orders` item (either key style) as a spool
    event; InvalidItem if it lacks a field or a value is implausible, `time` included: it must
    lie within `window` of `received_at`."""
    try:
        if "exName" in item:
            exchange, usd, coin = item["exName"], item["volUsd"], item["baseAsset"]
        else:
            exchange, usd, coin = item["exchange"], item["volume_usd"], item["base_asset"]
        pair = item["symbol"]
        side = WS_SIDES.get(item["side"])
        price = float(item["price"])
        usd = float(usd)
        time_ms = int(item["time"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InvalidItem(_malformed_reason(item), malformed=True) from None
    if not (
        side
        and is_text(exchange)
        and is_text(pair)
        and is_text(coin)
        and 0 < price < _INF
        and 0 < usd < _INF
        and received_at - window.lag_ms <= time_ms <= received_at + window.lead_ms
    ):
        raise InvalidItem(_invalid_reason(item, received_at, window), malformed=False)
    return _event(exchange, pair, coin, side, price, usd, time_ms, received_at, conn_id, "ws", item)


def _item_keys(item: dict[str, Any]) -> tuple[str, str, str]:
    """The item's names for exchange, USD value and coin, in whichever style it uses."""
    return _CAMEL_KEYS if "exName" in item else _SNAKE_KEYS


def _malformed_reason(item: Any) -> str:
    """Which field of a malformed item is missing or unreadable (off the hot path)."""
    if not isinstance(item, dict):
        return f"item is not a JSON object: {_preview(repr(item))}"
    exchange, usd, coin = _item_keys(item)
    for name in (exchange, usd, coin, "symbol", "side", "price", "time"):
        if name not in item:
            return f"missing field {name!r}"
    for name, convert in ((usd, float), ("price", float), ("time", int)):
        try:
            convert(item[name])
        except (TypeError, ValueError, OverflowError):
            return f"field {name!r} is not a number: {_preview(repr(item[name]))}"
    return f"field 'side' is not a side code: {_preview(repr(item['side']))}"


def _invalid_reason(item: dict[str, Any], received_at: int, window: EventWindow) -> str:
    """Which value of a well-formed item is implausible (off the hot path)."""
    exchange, usd, coin = _item_keys(item)
    if WS_SIDES.get(item["side"]) is None:
        return f"field 'side' must be 1 (long) or 2 (short), got {item['side']!r}"
    for name in (exchange, "symbol", coin):
        if not is_text(item[name]):
            return f"field {name!r} must be a non-empty string, got {_preview(repr(item[name]))}"
    for name in ("price", usd):
        if not 0 < float(item[name]) < _INF:
            return f"field {name!r} must be a finite number > 0, got {item[name]!r}"
    return window.problem(int(item["time"]), received_at) or f"unusable item {item!r}"


def normalize_rest_order(row: dict[str, Any], received_at: int | None = None) -> dict[str, Any]:
    """A REST `liquidation/order` row as an event dict (source "rest"), with the same event_id
    as the WebSocket copy of the same liquidation. Raises ValueError naming the bad field."""
    exchange = _field(row, "exchange_name", str)
    pair = _field(row, "symbol", str)
    coin = _field(row, "base_asset", str)
    price = _field(row, "price", float)
    usd = _field(row, "usd_value", float)
    time_ms = _field(row, "time", int)
    side = REST_SIDES.get(_field(row, "side", int))
    if side is None:
        raise ValueError(
            f"liquidation order: side must be 1 (Buy) or 2 (Sell), got {row['side']!r}"
        )
    if not (0 < price < _INF and 0 < usd < _INF and time_ms > 0):
        raise ValueError(f"liquidation order: price, usd_value and time must be > 0: {row!r}")
    return _event(exchange, pair, coin, side, price, usd, time_ms, received_at, "rest", "rest", row)


def _event(
    exchange: str,
    pair: str,
    coin: str,
    side: str,
    price: float,
    usd: float,
    time_ms: int,
    received_at: int | None,
    conn_id: str,
    source: str,
    raw: dict[str, Any],
) -> dict[str, Any]:
    """The spool's event dict, one shape for both sources, so their event_ids match."""
    exchange = display_exchange(exchange)
    return {
        "kind": "event",
        "event_id": event_id(exchange, pair, time_ms, price, side, usd),
        "exchange": exchange,
        "pair": pair,
        "symbol": coin,
        "side": side,
        "price": price,
        "usd_value": usd,
        "time": time_ms,
        "received_at": received_at,
        "conn_id": conn_id,
        "source": source,
        "raw": raw,
    }


def parse_frame(
    message: str | bytes, conn_id: str, received_at: int, window: EventWindow = DEFAULT_WINDOW
) -> Frame:
    """Classify one WebSocket message and normalise the liquidations it carries; never raises,
    whatever the server sends."""
    if isinstance(message, bytes):
        try:
            message = message.decode()
        except UnicodeDecodeError:
            return Frame("malformed", detail="binary frame that is not UTF-8")
    try:
        payload = json.loads(message)
    except (ValueError, RecursionError):
        return Frame("malformed", detail=f"not JSON: {_preview(message)}")
    if not isinstance(payload, dict):
        return Frame("malformed", detail=f"not a JSON object: {_preview(message)}")
    if payload.get("channel") not in LIQUIDATION_CHANNELS:
        return Frame("ignored", detail=_preview(message))
    items = payload.get("data")
    if not isinstance(items, list):
        return Frame("malformed", detail=f"`data` is not an array: {_preview(message)}")
    spans = item_texts(message, items)
    frame = Frame("events", raw_texts=None if spans is None else [])
    for index, item in enumerate(items):
        try:
            event = normalize_ws_item(item, conn_id, received_at, window)
        except InvalidItem as exc:
            frame.rejects.append(Reject(str(exc), item, exc.malformed))
            continue
        frame.events.append(event)
        if frame.raw_texts is not None:
            frame.raw_texts.append(spans[index])
    return frame


def item_texts(message: str, items: list[Any]) -> list[str] | None:
    """The source text of each item of `data`, or None when it cannot be cut out safely.

    Safe means: one line, every item an object, and exactly one pair of braces per item plus
    the message's own. Then no brace occurs inside a string or a nested value, so the
    brace-free `{...}` runs of the message are exactly the items, in order. Frames from
    CoinGlass (flat items, no braces in names) always qualify; anything else falls back.
    """
    n = len(items) + 1
    if (
        message.count("{") != n
        or message.count("}") != n
        or "\n" in message
        or "\r" in message
        or not all(type(item) is dict for item in items)
    ):
        return None
    return _ITEM_RE.findall(message)


def _field(row: dict[str, Any], name: str, kind: type) -> Any:
    try:
        value = row[name]
        if kind is int and isinstance(value, str):
            value = float(value)
        if kind is str and not is_text(value):
            raise ValueError
        return kind(value)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ValueError(
            f"liquidation order: field {name!r} missing or not a {kind.__name__} in {row!r}"
        ) from None


def _preview(message: str, limit: int = 120) -> str:
    return message if len(message) <= limit else message[:limit] + "…"
