"""The WebSocket simulator's protocol, over real loopback connections (reference §6)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from cg_assets.sim import WsSimulator
from cg_assets_tests.test_sim.conftest import until, ws_connect

CAMEL_KEYS = {"baseAsset", "exName", "price", "side", "symbol", "time", "volUsd"}
SNAKE_KEYS = {"base_asset", "exchange", "price", "side", "symbol", "time", "volume_usd"}


@pytest.mark.parametrize(
    ("channel", "keys"),
    [("liquidationOrders", CAMEL_KEYS), ("liquidation_orders", SNAKE_KEYS)],
)
def test_each_channel_name_pushes_its_own_key_style(ws_sim, channel, keys):
    async def scenario() -> dict:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe(channel)
            return await client.push()

    frame = asyncio.run(scenario())
    assert frame["channel"] == channel
    assert frame["data"]
    for item in frame["data"]:
        assert set(item) == keys
        assert item["side"] in (1, 2)
        assert isinstance(item["time"], int)
        assert isinstance(item["price"], float)
    assert ws_sim.stats.subscriptions == 1
    assert ws_sim.stats.events_sent >= len(frame["data"])


def test_pushed_items_carry_the_feeds_events(ws_sim):
    async def scenario() -> dict:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders")
            return await client.push()

    items = asyncio.run(scenario())["data"]
    by_time = {(e.time, e.price, e.usd_value): e for e in ws_sim.feed.events()}
    for item in items:
        event = by_time[(item["time"], item["price"], item["volUsd"])]
        assert (item["baseAsset"], item["exName"], item["symbol"]) == (
            event.coin,
            event.exchange,
            event.pair,
        )
        assert item["side"] == (1 if event.side == "long" else 2)


def test_plain_text_ping_gets_a_plain_text_pong(ws_sim):
    async def scenario() -> str:
        async with ws_connect(ws_sim.url) as client:
            await client.conn.send("ping")
            return await client.recv()

    assert asyncio.run(scenario()) == "pong"
    assert (ws_sim.stats.pings, ws_sim.stats.pongs) == (1, 1)


def test_unsubscribe_stops_pushes(ws_sim):
    async def scenario() -> None:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders", "liquidation_orders", "futures_trades@x")
            await client.push()
            await client.unsubscribe("liquidationOrders", "liquidation_orders")
            await client.conn.send("ping")
            await client.pong()  # frames queued before the unsubscribe came first
            ticks = ws_sim.stats.ticks
            await until(lambda: ws_sim.stats.ticks >= ticks + 3)
            await client.conn.send("ping")
            assert await client.recv() == "pong"  # no push in between

    asyncio.run(scenario())
    assert ws_sim.stats.subscriptions == 2  # the unknown channel is ignored


def test_one_unsubscribed_channel_keeps_the_other(ws_sim):
    async def scenario() -> set[str]:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders", "liquidation_orders")
            await client.unsubscribe("liquidationOrders")
            await client.conn.send("ping")
            await client.pong()
            return {(await client.push())["channel"] for _ in range(3)}

    assert asyncio.run(scenario()) == {"liquidation_orders"}


def test_a_client_receives_at_least_40k_events_in_its_first_second_at_50k_per_s(ws_sim):
    """Counted by event time (the second after subscribing), so a slow machine only delays
    delivery; the wait for it is generous."""
    feed = ws_sim.feed
    feed.rate_per_s = 50_000

    async def scenario() -> int:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders")
            start = feed.clock()
            end = start + 1_000
            received = 0
            while True:
                items = (await client.push(timeout=15))["data"]
                received += sum(1 for i in items if start <= i["time"] < end)
                if items[-1]["time"] >= end:
                    return received

    assert asyncio.run(scenario()) >= 40_000


def test_frames_batch_at_most_max_batch_events(live_feed):
    live_feed.rate_per_s = 20_000
    with WsSimulator(live_feed, require_key=False, max_batch=100) as sim:

        async def scenario() -> list[int]:
            async with ws_connect(sim.url) as client:
                await client.subscribe("liquidation_orders")
                return [len((await client.push())["data"]) for _ in range(20)]

        sizes = asyncio.run(scenario())
    assert max(sizes) == 100


def test_record_sent_lists_the_events_each_connection_got(live_feed):
    with WsSimulator(live_feed, require_key=False, record_sent=True) as sim:

        async def scenario() -> list[dict]:
            async with ws_connect(sim.url) as client:
                await client.subscribe("liquidationOrders")
                return [(await client.push())["data"] for _ in range(3)]

        frames = asyncio.run(scenario())
        sent = sim.stats.sent[:3]
    assert [[i["time"] for i in items] for items in frames] == [f.time.tolist() for f in sent]
    by_seq = {e.seq: e for e in live_feed.events()}
    assert [by_seq[s].usd_value for s in sent[0].seq.tolist()] == [i["volUsd"] for i in frames[0]]
    assert {f.conn_id for f in sent} == {1}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "API key missing."),
        ("nope", "Invalid API key provided"),
        ("hobby", "Upgrade plan"),
    ],
)
def test_bad_keys_are_closed_with_policy_violation(live_feed, key, reason):
    keys = {"good": "standard", "hobby": "startup"}
    with WsSimulator(live_feed, keys=keys) as sim:

        async def scenario() -> tuple[int | None, str | None]:
            async with ws_connect(sim.url, key) as client:
                return await client.closed()

        closed = asyncio.run(scenario())
        assert sim.stats.rejected == 1
    assert closed == (1008, reason)


def test_a_valid_key_is_served(live_feed):
    with WsSimulator(live_feed, keys={"good": "standard"}) as sim:

        async def scenario() -> str:
            async with ws_connect(sim.url, "good") as client:
                await client.conn.send("ping")
                return await client.recv()

        assert asyncio.run(scenario()) == "pong"


def test_other_paths_are_not_websocket_endpoints(ws_sim):
    async def scenario() -> None:
        async with ws_connect(ws_sim.url.replace("/ws-api", "/ws")):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(scenario())
    assert refused.value.response.status_code == 404
