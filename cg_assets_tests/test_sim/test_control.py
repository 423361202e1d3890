"""The simulators' control routes, through which a soak in another process triggers faults:
WebSocket closes, ping silences and poison items (on the REST port), the feed's events of a
window, and a Telegram outage. Real HTTP and WebSocket on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import requests

from cg_assets.sim import LiquidationFeed, SimulatorServer, TelegramServer, WsSimulator
from cg_assets.sim.rest import feed_events
from cg_assets.sim.ws import POISON_KINDS, poison_item
from cg_assets_tests.test_sim.conftest import NOW_MS, Clock, until, ws_connect
from cg_assets_tests.test_sim.test_telegram import CHAT, TOKEN, error, send
from ws_sidecar.parse import InvalidItem, normalize_ws_item


@pytest.fixture
def rest(live_feed: LiquidationFeed, ws_sim: WsSimulator) -> Iterator[SimulatorServer]:
    with SimulatorServer(live_feed.market, require_key=False, feed=live_feed, ws=ws_sim) as srv:
        yield srv


def post(server: SimulatorServer, path: str, body: object) -> requests.Response:
    return requests.post(f"{server.base_url}{path}", json=body, timeout=10)


def test_close_route_closes_every_websocket_connection(rest, ws_sim):
    async def scenario() -> tuple[int, int | None]:
        async with ws_connect(ws_sim.url) as client:
            await until(lambda: ws_sim.open_connections == 1)
            answer = await asyncio.to_thread(post, rest, "/_sim/ws/close", {})
            code, _ = await client.closed()
            return answer.json()["closed"], code

    assert asyncio.run(scenario()) == (1, 1001)


def test_faults_route_silences_pings_and_refuses_bad_knobs(rest, ws_sim):
    assert post(rest, "/_sim/ws/faults", {"answer_pings": False}).json()["answer_pings"] is False
    assert ws_sim.faults.answer_pings is False
    refused = post(rest, "/_sim/ws/faults", {"answer_pings": False, "stall": "yes"})
    assert refused.status_code == 400
    assert "stall" in refused.json()["error"]
    assert post(rest, "/_sim/ws/faults", {"nope": 1}).status_code == 400
    assert requests.get(f"{rest.base_url}/_sim/ws/faults", timeout=10).json() == {
        "answer_pings": False,
        "malformed_rate": 0.0,
        "stall": False,
    }


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_poison_route_pushes_one_item_the_sidecar_refuses(rest, ws_sim, kind):
    async def scenario() -> dict:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders")
            await client.push()
            answer = await asyncio.to_thread(post, rest, "/_sim/ws/poison", {"kind": kind})
            assert answer.json() == {"frames": 1}
            while True:
                frame = await client.push()
                if len(frame["data"]) == 1 and (
                    frame["data"][0]["time"] > 10**14 or frame["data"][0]["price"] < 0
                ):
                    return frame["data"][0]

    item = asyncio.run(scenario())
    received_at = item["time"] // 1000 if kind == "microseconds" else item["time"]
    with pytest.raises(InvalidItem):
        normalize_ws_item(item, "c1", received_at)
    asyncio.run(until(lambda: ws_sim.stats.poisoned_events == 1))
    stats = requests.get(f"{rest.base_url}/_sim/ws/stats", timeout=10).json()
    assert stats["poisoned_events"] == 1
    assert post(rest, "/_sim/ws/poison", {"kind": "seconds"}).status_code == 400


def test_poison_item_breaks_only_its_field():
    item = {"exName": "Binance", "symbol": "BTCUSDT", "time": 1_700_000_000_000, "price": 9.5}
    assert poison_item(item, "microseconds") == {**item, "time": 1_700_000_000_000_000}
    assert poison_item(item, "negative_price") == {**item, "price": -9.5}


def test_feed_events_route_lists_a_windows_events_with_filters(rest, live_feed):
    start = live_feed.clock()
    for coin, exchange in (("BTC", "Binance"), ("ETH", "Binance"), ("SOL", None), ("BTC", "OKX")):
        live_feed.burst(coin, 1e6, 5, exchange=exchange)
    end = live_feed.clock() + 1
    params = {"start_ms": start, "end_ms": end, "coins": "BTC,ETH", "exchanges": "Binance"}
    columns = requests.get(f"{rest.base_url}/_sim/feed/events", params=params, timeout=10).json()
    assert columns["end_ms"] == end
    # Read after the answer: the route brings the feed up to now, and the clock runs.
    expected = [
        e
        for e in live_feed.query(start, end).events()
        if e.coin in ("BTC", "ETH") and e.exchange == "Binance"
    ]
    assert len(expected) >= 10
    assert columns["time"] == [e.time for e in expected]
    assert columns["pair"] == [e.pair for e in expected]
    assert columns["side"] == [e.side for e in expected]
    assert columns["usd_value"] == [e.usd_value for e in expected]
    bad = requests.get(f"{rest.base_url}/_sim/feed/events", params={"start_ms": "x"}, timeout=10)
    assert bad.status_code == 400
    assert "start_ms" in bad.json()["error"]


def test_feed_events_answer_a_window_only_as_far_as_it_is_complete(sim_market):
    """Found by the soak: the feed generates on its pushes, so a window asked a moment after
    the last push lacked the events the next push then stamped inside it. The route brings
    the feed up to now first, and says how far the window it answered is complete."""
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=2_000, clock=clock)
    clock.now += 10_000
    feed.advance()
    clock.now += 500  # no push since: the last 500 ms are not generated yet
    start, asked = NOW_MS, NOW_MS + 10_400
    answer = feed_events(feed, {"start_ms": str(start), "end_ms": str(asked)})
    assert answer["end_ms"] == asked
    clock.now += 60_000
    feed.advance()  # later pushes add nothing inside the window answered
    later = feed_events(feed, {"start_ms": str(start), "end_ms": str(asked)})
    assert len(later["time"]) > 20_000
    assert answer == later
    assert max(answer["time"]) > NOW_MS + 10_000  # the part that was not generated when asked
    ahead = feed_events(feed, {"start_ms": str(start), "end_ms": str(clock.now + 5_000)})
    assert ahead["end_ms"] == clock.now + 1  # the future is not complete


def test_telegram_outage_answers_502_until_it_ends():
    clock = Clock(1_000)
    with TelegramServer(tokens=[TOKEN], chats=[CHAT], clock=clock) as tg:
        answer = requests.post(f"{tg.base_url}/_sim/outage", json={"seconds": 30}, timeout=10)
        assert answer.json() == {"seconds": 30}
        assert error(send(tg, "lost")) == (502, "Bad Gateway")
        clock.now += 29
        assert error(send(tg, "lost too")) == (502, "Bad Gateway")
        clock.now += 1
        assert send(tg, "through")["ok"] is True
        assert [m.plain for m in tg.messages()] == ["through"]
        bad = requests.post(f"{tg.base_url}/_sim/outage", json={"seconds": "x"}, timeout=10)
        assert bad.status_code == 400
