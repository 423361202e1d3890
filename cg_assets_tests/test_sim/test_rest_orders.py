"""REST `liquidation/order`, served from the same LiquidationFeed as the WebSocket."""

from __future__ import annotations

import asyncio

import pytest

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS
from cg_assets.sim import LiquidationFeed, SimulatorServer, WsSimulator
from cg_assets_tests.test_sim.conftest import NOW_MS, Api, ws_connect

ORDERS = "/api/futures/liquidation/order"
ROW_KEYS = ["exchange_name", "symbol", "base_asset", "price", "usd_value", "side", "time"]


@pytest.fixture
def feed(sim_market, clock) -> LiquidationFeed:
    """Ten minutes of events before the clock's now, at a rate that needs several pages."""
    start = clock.now
    clock.now -= 10 * 60_000
    feed = LiquidationFeed(sim_market, rate_per_s=20.0, clock=clock)
    clock.now = start
    feed.advance()
    return feed


@pytest.fixture
def orders_api(make_api, feed) -> Api:
    return make_api(require_key=False, plan="standard", feed=feed)


def expected(feed: LiquidationFeed, coin: str, exchange: str, min_usd: float = 0.0) -> list:
    return [
        e
        for e in feed.events()
        if e.coin == coin and e.exchange == exchange and e.usd_value >= min_usd
    ]


def key(row: dict) -> tuple:
    return (row["time"], row["symbol"], row["price"], row["usd_value"], row["side"])


def event_key(event) -> tuple:
    return (event.time, event.pair, event.price, event.usd_value, 2 if event.side == "long" else 1)


def test_below_standard_the_endpoint_asks_for_an_upgrade(make_api, feed):
    api = make_api(require_key=False, plan="startup", feed=feed)
    body = api.body(ORDERS, exchange="Binance", symbol="BTC", min_liquidation_amount="0")
    assert body == {"code": "401", "msg": "Upgrade plan"}


def test_rows_are_the_newest_200_newest_first(orders_api, feed):
    rows = orders_api.data(ORDERS, exchange="Binance", symbol="BTC", min_liquidation_amount="0")
    events = expected(feed, "BTC", "Binance")
    assert len(events) > 600
    assert len(rows) == 200
    assert [key(r) for r in rows] == [event_key(e) for e in reversed(events[-200:])]
    assert list(rows[0]) == ROW_KEYS
    assert {(r["exchange_name"], r["symbol"], r["base_asset"]) for r in rows} == {
        ("BINANCE", "BTCUSDT", "BTC")
    }


def test_paging_back_by_end_time_reaches_every_event_once(orders_api, feed):
    """The robust client loop: drop the oldest millisecond of a full page and ask again up to
    and including it (end_time is exclusive), so events sharing a millisecond are not lost."""
    seen: list[tuple] = []
    end_time = NOW_MS + 1
    while True:
        rows = orders_api.data(
            ORDERS, exchange="OKX", symbol="ETH", min_liquidation_amount="0", end_time=end_time
        )
        assert len(rows) <= 200
        assert [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True)
        if len(rows) < 200:
            seen += [key(r) for r in rows]
            break
        oldest = rows[-1]["time"]
        seen += [key(r) for r in rows if r["time"] > oldest]
        end_time = oldest + 1
    assert sorted(seen) == sorted(event_key(e) for e in expected(feed, "ETH", "OKX"))
    assert len(seen) == len(set(seen)) > 200


def test_min_liquidation_amount_filters_by_usd_value(orders_api, feed):
    rows = orders_api.data(ORDERS, exchange="Bybit", symbol="BTC", min_liquidation_amount="50000")
    assert 0 < len(rows) < 200
    assert [key(r) for r in rows] == [
        event_key(e) for e in reversed(expected(feed, "BTC", "Bybit", 50_000))
    ]


def test_start_and_end_time_bound_the_window(orders_api, feed):
    start, end = NOW_MS - 5 * 60_000, NOW_MS - 4 * 60_000
    rows = orders_api.data(
        ORDERS,
        exchange="Binance",
        symbol="ETH",
        min_liquidation_amount="0",
        start_time=str(start),
        end_time=str(end),
    )
    events = [e for e in expected(feed, "ETH", "Binance") if start <= e.time < end]
    assert [key(r) for r in rows] == [event_key(e) for e in reversed(events)]


def test_only_the_past_7_days_are_served(sim_market, clock, make_api):
    """Events from 7 days and 30 minutes ago to 6 days 23.5 hours ago, asked for from the
    start: only those within 7 days come back."""
    clock.now = NOW_MS - 7 * DAY_MS - HOUR_MS // 2
    feed = LiquidationFeed(sim_market, rate_per_s=0.2, clock=clock)
    clock.now += HOUR_MS
    feed.advance()
    feed.rate_per_s = 0
    clock.now = NOW_MS
    api = make_api(require_key=False, feed=feed)
    rows = api.data(
        ORDERS,
        exchange="Binance",
        symbol="BTC",
        min_liquidation_amount="0",
        start_time=str(NOW_MS - 8 * DAY_MS),
    )
    events = expected(feed, "BTC", "Binance")
    recent = [e for e in events if e.time >= NOW_MS - 7 * DAY_MS]
    assert 0 < len(recent) < len(events)
    assert [key(r) for r in rows] == [event_key(e) for e in reversed(recent)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"symbol": "BTC", "min_liquidation_amount": "0"}, "'exchange' is not present"),
        ({"exchange": "Binance", "min_liquidation_amount": "0"}, "'symbol' is not present"),
        ({"exchange": "Binance", "symbol": "BTC"}, "'min_liquidation_amount' is not present"),
        ({"exchange": "Binance", "symbol": "BTCUSDT", "min_liquidation_amount": "0"}, "coin"),
        ({"exchange": "Binance", "symbol": "BTC", "min_liquidation_amount": "lots"}, "USD"),
    ],
)
def test_bad_parameters_are_rejected(orders_api, params, message):
    body = orders_api.body(ORDERS, **params)
    assert body["code"] == "400"
    assert message in body["msg"]


def test_without_a_feed_the_server_creates_one_on_its_clock(api, clock):
    assert api.data(ORDERS, exchange="Binance", symbol="BTC", min_liquidation_amount="0") == []
    clock.now += 60_000
    api.server.feed.rate_per_s = 100
    rows = api.data(ORDERS, exchange="Binance", symbol="BTC", min_liquidation_amount="0")
    assert rows
    assert all(NOW_MS < r["time"] <= clock.now for r in rows)


def test_a_pushed_event_and_its_rest_copy_agree(sim_market, live_feed):
    """Same time, price and usd value; WS side 1 (long liquidated) is REST side 2 (Sell)."""
    rest = SimulatorServer(sim_market, require_key=False, clock=live_feed.clock, feed=live_feed)
    with rest, WsSimulator(live_feed, require_key=False) as ws:

        async def scenario() -> list[dict]:
            async with ws_connect(ws.url) as client:
                await client.subscribe("liquidationOrders")
                items: list[dict] = []
                while {i["side"] for i in items} != {1, 2}:
                    items += (await client.push())["data"]
                return items

        items = asyncio.run(scenario())
        api = Api(rest)
        sample = [i for i in items if i["side"] == 1][:5] + [i for i in items if i["side"] == 2][:5]
        for item in sample:
            rows = api.data(
                ORDERS,
                exchange=item["exName"],
                symbol=item["baseAsset"],
                min_liquidation_amount=str(item["volUsd"]),
                start_time=str(item["time"]),
                end_time=str(item["time"] + 1),
            )
            match = [
                r for r in rows if (r["price"], r["usd_value"]) == (item["price"], item["volUsd"])
            ]
            assert len(match) == 1
            row = match[0]
            assert row["time"] == item["time"]
            assert row["symbol"] == item["symbol"]
            assert row["exchange_name"] == item["exName"].upper()
            assert row["side"] == {1: 2, 2: 1}[item["side"]]
        api.session.close()
