"""Payload normalisation: both WebSocket styles, REST rows, side codes, ids, bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ws_sidecar.parse import (
    display_exchange,
    event_id,
    item_texts,
    normalize_rest_order,
    normalize_ws_item,
    parse_frame,
)

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


def frame(channel: str, items: list) -> str:
    return json.dumps({"channel": channel, "data": items})


def test_both_ws_styles_normalise_to_the_same_event():
    camel = normalize_ws_item(CAMEL, "c1", 1745216319400)
    snake = normalize_ws_item(SNAKE, "c1", 1745216319400)
    assert camel is not None
    assert snake is not None
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
    event = normalize_ws_item({**CAMEL, "side": code}, "c1", 0)
    assert event is not None
    assert event["side"] == side


@pytest.mark.parametrize(("code", "side"), [(2, "long"), (1, "short"), ("2", "long")])
def test_rest_side_is_the_forced_orders_direction(code, side):
    assert normalize_rest_order({**REST, "side": code})["side"] == side


def test_rest_and_ws_copies_of_one_liquidation_share_the_event_id():
    ws = normalize_ws_item({**CAMEL, "side": 2}, "c1", 0)
    rest = normalize_rest_order({**REST, "side": 1})  # Buy: the short was liquidated
    assert ws is not None
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
    "item",
    [
        {k: v for k, v in CAMEL.items() if k != "volUsd"},
        {**CAMEL, "side": 3},
        {**CAMEL, "side": [1]},
        {**CAMEL, "price": "abc"},
        {**CAMEL, "price": -1.0},
        {**CAMEL, "price": float("nan")},
        {**CAMEL, "volUsd": float("inf")},
        {**CAMEL, "time": None},
        {**CAMEL, "exName": ""},
        {**CAMEL, "symbol": 5},
        {"symbol": "BTCUSDT"},
        "not an object",
        None,
    ],
)
def test_unusable_items_are_rejected(item):
    assert normalize_ws_item(item, "c1", 0) is None


def test_frame_with_some_bad_items_keeps_the_good_ones():
    parsed = parse_frame(frame("liquidationOrders", [CAMEL, {"symbol": "X"}, SNAKE]), "c1", 5)
    assert parsed.kind == "events"
    assert parsed.rejected == 1
    assert [e["raw"] for e in parsed.events] == [CAMEL, SNAKE]


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
    parsed = parse_frame(frame("liquidation_orders", [SNAKE]).encode(), "c1", 0)
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
    parsed = parse_frame(message, "c1", 0)
    assert parsed.raw_texts is None
    assert len(parsed.events) == 1
