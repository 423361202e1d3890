"""WebSocket faults, switched at runtime on a serving simulator."""

from __future__ import annotations

import asyncio
import json

import pytest

from cg_assets.sim import WsSimulator
from cg_assets_tests.test_sim.conftest import until, ws_connect


def test_close_connections_closes_every_client_from_the_server(ws_sim):
    async def scenario() -> list[int]:
        async with ws_connect(ws_sim.url) as first, ws_connect(ws_sim.url) as second:
            await first.subscribe("liquidationOrders")
            await first.push()
            await until(lambda: ws_sim.open_connections == 2)
            assert ws_sim.faults.close_connections() == 2
            codes = [(await client.closed())[0] for client in (first, second)]
            await until(lambda: ws_sim.open_connections == 0)
            return codes

    assert asyncio.run(scenario()) == [1001, 1001]


def test_unanswered_pings(ws_sim):
    ws_sim.faults.answer_pings = False

    async def scenario() -> None:
        async with ws_connect(ws_sim.url) as client:
            await client.conn.send("ping")
            await until(lambda: ws_sim.stats.pings == 1)
            ws_sim.faults.answer_pings = True
            await client.conn.send("ping")
            assert await client.recv() == "pong"

    asyncio.run(scenario())
    assert (ws_sim.stats.pings, ws_sim.stats.pongs) == (2, 1)


def test_malformed_frames(ws_sim):
    ws_sim.faults.malformed_rate = 1.0

    def kind(text: str) -> str:
        try:
            frame = json.loads(text)
        except ValueError:
            return "truncated"
        if not isinstance(frame["data"], list):
            return "not_array"
        assert all("time" not in item for item in frame["data"])
        return "missing_fields"

    async def scenario() -> set[str]:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidation_orders")
            return {kind(await client.recv()) for _ in range(12)}

    assert asyncio.run(scenario()) == {"truncated", "not_array", "missing_fields"}
    assert ws_sim.stats.malformed_frames >= 12
    assert ws_sim.stats.events_sent == 0
    with pytest.raises(ValueError, match="malformed_rate"):
        ws_sim.faults.malformed_rate = 1.5


def test_poisoned_events_carry_microsecond_timestamps(ws_sim):
    async def scenario() -> list[dict]:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders")
            await client.push()
            ws_sim.faults.poison_next(2)
            items: list[dict] = []
            while sum(i["time"] > 10**14 for i in items) < 2 or len(items) < 10:
                items += (await client.push())["data"]
            await until(lambda: ws_sim.stats.poisoned_events == 2)
            return items

    poisoned = [i["time"] > 10**14 for i in asyncio.run(scenario())]
    assert sum(poisoned) == 2
    first = poisoned.index(True)
    assert poisoned[first : first + 2] == [True, True]  # the next two, in a row
    with pytest.raises(ValueError, match="count must be >= 0"):
        ws_sim.faults.poison_next(-1)


def test_stall_keeps_the_socket_open_but_silent_then_recovers(ws_sim):
    async def scenario() -> None:
        async with ws_connect(ws_sim.url) as client:
            await client.subscribe("liquidationOrders")
            await client.push()
            ws_sim.faults.stall = True
            ticks = ws_sim.stats.ticks
            await until(lambda: ws_sim.stats.ticks >= ticks + 2)  # in-flight frames are out
            sent = ws_sim.stats.frames_sent
            await client.conn.send("ping")
            protocol_pong = await client.conn.ping()
            await until(lambda: ws_sim.stats.ticks >= ticks + 6)
            assert ws_sim.stats.frames_sent == sent
            assert ws_sim.stats.pings == 0  # not even read
            assert not protocol_pong.done()
            assert ws_sim.open_connections == 1
            ws_sim.faults.stall = False
            await client.pong()
            async with asyncio.timeout(5):
                await protocol_pong
            await client.push()

    asyncio.run(scenario())


def test_restart_serves_again_on_the_same_port(ws_sim):
    url = ws_sim.url

    async def scenario() -> None:
        async with ws_connect(url) as client:
            await client.subscribe("liquidationOrders")
            await client.push()
            # In a thread: the server waits for this loop to answer its close frame.
            await asyncio.to_thread(ws_sim.faults.restart)
            assert (await client.closed())[0] == 1001
        async with ws_connect(url) as client:
            await client.subscribe("liquidationOrders")
            await client.push()

    asyncio.run(scenario())
    assert ws_sim.url == url
    assert ws_sim.stats.connections == 2


def test_stop_then_start_refuses_connections_meanwhile(live_feed):
    sim = WsSimulator(live_feed, require_key=False).start()
    url = sim.url
    sim.stop()

    async def connect_once() -> None:
        async with ws_connect(url):
            pass

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(connect_once())
    with sim.start():
        assert sim.url == url
        asyncio.run(connect_once())


def test_clear_switches_every_fault_off(ws_sim):
    faults = ws_sim.faults
    faults.answer_pings, faults.malformed_rate, faults.stall = False, 0.5, True
    faults.poison_next(3)
    faults.clear()
    assert (faults.answer_pings, faults.malformed_rate, faults.stall) == (True, 0.0, False)
    assert faults.take_poison(10) == 0
