"""Payload normalisation: both WebSocket styles, REST rows, side codes, ids, bad input."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ws_sidecar.parse import (
    InvalidItem,
    display_exchange,
    event_id,
    item_texts,
    normalize_rest_order,
    normalize_ws_item,
    parse_frame,
)
from ws_sidecar.validate import EventWindow

CAMEL = {
    "baseAsset": "BTC",
    "exName": "Binance",
    "price": 87535.9,
    "side": 2,
    "symbol": "BTCUSDT",
    "time": 1745216319263,
    "volUsd": 205534.2932,
}
SNAKE = {
    "base_asset": "BTC",
    "exchange": "Binance",
    "price": 87535.9,
    "side": 2,
    "symbol": "BTCUSDT",
    "time": 1745216319263,
    "volume_usd": 205534.2932,
}
# The same liquidation as REST liquidation/order reports it (reference §5.6).
REST = {
    "exchange_name": "BINANCE",
    "symbol": "BTCUSDT",
    "base_asset": "BTC",
    "price": 87535.9,
    "usd_value": 205534.2932,
    "side": 1,
    "time": 1745216319263,
}


RECEIVED = 1745216319400  # 137 ms after the liquidation


def frame(channel: str, items: list) -> str:
    return json.dumps({"channel": channel, "data": items})


def test_both_ws_styles_normalise_to_the_same_event():
    camel = normalize_ws_item(CAMEL, "c1", RECEIVED)
    snake = normalize_ws_item(SNAKE, "c1", RECEIVED)
    assert camel.pop("raw") == CAMEL
    assert snake.pop("raw") == SNAKE
    assert camel == snake
    assert camel == {
        "kind": "event",
        "event_id": camel["event_id"],
        "exchange": "Binance",
        "pair": "BTCUSDT",
        "symbol": "BTC",
        "side": "short",
        "price": 87535.9,
        "usd_value": 205534.2932,
        "time": 1745216319263,
        "received_at": 1745216319400,
        "conn_id": "c1",
        "source": "ws",
    }
    assert next(iter(camel)) == "kind"


@pytest.mark.parametrize(("code", "side"), [(1, "long"), (2, "short"), ("1", "long")])
def test_ws_side_names_the_liquidated_side(code, side):
    event = normalize_ws_item({**CAMEL, "side": code}, "c1", RECEIVED)
    assert event["side"] == side


@pytest.mark.parametrize(("code", "side"), [(2, "long"), (1, "short"), ("2", "long")])
def test_rest_side_is_the_forced_orders_direction(code, side):
    assert normalize_rest_order({**REST, "side": code})["side"] == side


def test_rest_and_ws_copies_of_one_liquidation_share_the_event_id():
    ws = normalize_ws_item({**CAMEL, "side": 2}, "c1", RECEIVED)
    rest = normalize_rest_order({**REST, "side": 1})  # Buy: the short was liquidated
    assert rest["event_id"] == ws["event_id"]
    assert (rest["exchange"], rest["symbol"], rest["source"], rest["side"]) == (
        "Binance",
        "BTC",
        "rest",
        "short",
    )


def test_rest_rows_with_string_numbers_are_coerced():
    row = {**REST, "price": "87535.9", "usd_value": "205534.2932", "time": "1745216319263"}
    assert normalize_rest_order(row)["event_id"] == normalize_rest_order(REST)["event_id"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({k: v for k, v in REST.items() if k != "price"}, "price"),
        ({**REST, "exchange_name": ""}, "exchange_name"),
        ({**REST, "time": "soon"}, "time"),
        ({**REST, "side": 3}, "side"),
    ],
)
def test_bad_rest_rows_raise_naming_the_field(row, field):
    with pytest.raises(ValueError, match=field):
        normalize_rest_order(row)


def test_event_id_is_stable_and_rounds_to_8_significant_digits():
    base = event_id("Binance", "BTCUSDT", 1745216319263, 87535.9, "long", 205534.2932)
    # A golden value: changing the hash would orphan every id already in the lake.
    assert base == "310a0c2f73ccc84c"
    assert (
        event_id("BINANCE", "BTCUSDT", 1745216319263, 87535.9000001, "long", 205534.29321) == base
    )
    assert event_id("Binance", "BTCUSDT", 1745216319263, 87535.9, "short", 205534.2932) != base
    assert event_id("Binance", "BTCUSDT", 1745216319264, 87535.9, "long", 205534.2932) != base


@pytest.mark.parametrize(
    ("name", "display"),
    [
        ("BINANCE", "Binance"),
        ("okx", "OKX"),
        ("HYPERLIQUID", "Hyperliquid"),
        ("CRYPTO.COM", "Crypto.com"),
        ("DYDX", "dYdX"),
        ("SOMENEWDEX", "Somenewdex"),
        ("NewDex", "NewDex"),
    ],
)
def test_exchange_display_names(name, display):
    assert display_exchange(name) == display


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({k: v for k, v in CAMEL.items() if k != "volUsd"}, "missing field 'volUsd'"),
        ({k: v for k, v in SNAKE.items() if k != "time"}, "missing field 'time'"),
        ({**CAMEL, "side": [1]}, "field 'side' is not a side code: [1]"),
        ({**CAMEL, "price": "abc"}, "field 'price' is not a number: 'abc'"),
        ({**CAMEL, "time": None}, "field 'time' is not a number: None"),
        ({**CAMEL, "time": float("nan")}, "field 'time' is not a number: nan"),
        ({"symbol": "BTCUSDT"}, "missing field 'exchange'"),
        ("not an object", "item is not a JSON object: 'not an object'"),
        (None, "item is not a JSON object: None"),
    ],
)
def test_malformed_items_are_rejected_naming_the_field(item, reason):
    with pytest.raises(InvalidItem) as info:
        normalize_ws_item(item, "c1", RECEIVED)
    assert str(info.value) == reason
    assert info.value.malformed


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({**CAMEL, "side": 3}, "field 'side' must be 1 (long) or 2 (short), got 3"),
        ({**CAMEL, "price": -1.0}, "field 'price' must be a finite number > 0, got -1.0"),
        ({**CAMEL, "price": float("nan")}, "field 'price' must be a finite number > 0, got nan"),
        ({**SNAKE, "volume_usd": float("inf")}, "field 'volume_usd' must be a finite number > 0"),
        ({**CAMEL, "volUsd": 0}, "field 'volUsd' must be a finite number > 0, got 0"),
        ({**CAMEL, "exName": ""}, "field 'exName' must be a non-empty string, got ''"),
        ({**CAMEL, "symbol": 5}, "field 'symbol' must be a non-empty string, got 5"),
        ({**SNAKE, "base_asset": ""}, "field 'base_asset' must be a non-empty string"),
        # Microseconds, seconds, and a clock off by a day: all outside the window.
        ({**CAMEL, "time": CAMEL["time"] * 1000}, "time 1745216319263000 is outside its receipt"),
        ({**CAMEL, "time": CAMEL["time"] // 1000}, "time 1745216319 is outside its receipt"),
        ({**CAMEL, "time": RECEIVED + 86_400_000}, "minus 3600 s to plus 300 s"),
    ],
)
def test_implausible_items_are_rejected_naming_the_field_and_value(item, reason):
    with pytest.raises(InvalidItem, match=re.escape(reason)) as info:
        normalize_ws_item(item, "c1", RECEIVED)
    assert not info.value.malformed


def test_the_time_window_is_the_callers():
    late = {**CAMEL, "time": RECEIVED - 3_600_001}
    with pytest.raises(InvalidItem, match="outside its receipt"):
        normalize_ws_item(late, "c1", RECEIVED)
    wide = EventWindow(lag_ms=7_200_000, lead_ms=0)
    assert normalize_ws_item(late, "c1", RECEIVED, wide)["time"] == late["time"]
    with pytest.raises(InvalidItem, match="plus 0 s"):
        normalize_ws_item({**CAMEL, "time": RECEIVED + 1}, "c1", RECEIVED, wide)


def test_frame_with_some_bad_items_keeps_the_good_ones():
    poison = {**CAMEL, "time": CAMEL["time"] * 1000}
    items = [CAMEL, {"symbol": "X"}, poison, SNAKE]
    parsed = parse_frame(frame("liquidationOrders", items), "c1", RECEIVED)
    assert parsed.kind == "events"
    assert [e["raw"] for e in parsed.events] == [CAMEL, SNAKE]
    assert [(r.raw, r.malformed) for r in parsed.rejects] == [
        ({"symbol": "X"}, True),
        (poison, False),
    ]
    assert parsed.raw_texts == [json.dumps(CAMEL), json.dumps(SNAKE)]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ('{"channel":"liquidationOrders","data":[{"baseAsset":"BT', "malformed"),
        ('{"channel":"liquidationOrders","data":{"baseAsset":"BTC"}}', "malformed"),
        ("[1, 2]", "malformed"),
        (b"\xff\xfe", "malformed"),
        ("", "malformed"),
        ('{"channel":"futures_trades@Binance_BTCUSDT@10000","data":[]}', "ignored"),
        ('{"code":"401","msg":"Invalid API key"}', "ignored"),
    ],
)
def test_frames_that_carry_no_liquidations(message, kind):
    parsed = parse_frame(message, "c1", 0)
    assert (parsed.kind, parsed.events) == (kind, [])
    assert parsed.detail


def test_snake_channel_and_bytes_frames_are_accepted():
    parsed = parse_frame(frame("liquidation_orders", [SNAKE]).encode(), "c1", RECEIVED)
    assert parsed.kind == "events"
    assert len(parsed.events) == 1


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_frame_never_raises(message):
    assert parse_frame(message, "c1", 0).kind in ("events", "ignored", "malformed")


def test_raw_texts_are_the_items_source_text():
    message = '{"channel":"liquidationOrders", "data": [{"exName":"Binance", "baseAsset":"BTC",'
    message += '"price":1.50,"side":1,"symbol":"BTCUSDT","time":5,"volUsd":10}, {"x":1}]}'
    parsed = parse_frame(message, "c1", 0)
    assert parsed.raw_texts == [
        '{"exName":"Binance", "baseAsset":"BTC","price":1.50,"side":1,"symbol":"BTCUSDT",'
        '"time":5,"volUsd":10}'
    ]


@pytest.mark.parametrize(
    "message",
    [
        frame("liquidationOrders", [{**CAMEL, "exName": "Odd{Name}"}]),
        frame("liquidationOrders", [{**CAMEL, "extra": {"nested": 1}}]),
        json.dumps({"channel": "liquidationOrders", "data": [CAMEL]}, indent=1),
    ],
)
def test_raw_texts_fall_back_when_the_frame_is_ambiguous(message):
    items = json.loads(message)["data"]
    assert item_texts(message, items) is None
    parsed = parse_frame(message, "c1", RECEIVED)
    assert parsed.raw_texts is None
    assert len(parsed.events) == 1
