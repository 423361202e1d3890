"""`POST /_sim/liquidation`: one large order into the live feed, from another process."""

from __future__ import annotations

import requests

from cg_assets.sim import LiquidationFeed, SimulatorServer
from cg_assets_tests.test_sim.conftest import Clock


def test_an_injected_order_enters_the_feed_and_the_order_history(sim_market, clock: Clock):
    feed = LiquidationFeed(sim_market, clock=clock, rate_per_s=0)
    with SimulatorServer(sim_market, require_key=False, clock=clock, feed=feed) as server:
        answer = requests.post(
            f"{server.base_url}/_sim/liquidation",
            json={"coin": "ETH", "usd": 2_500_000, "side": "short", "exchange": "OKX"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        order = answer.json()
        assert (order["coin"], order["exchange"], order["side"]) == ("ETH", "OKX", "short")
        assert order["usd_value"] == 2_500_000
        assert order["time"] == clock.now
        [stored] = feed.query(clock.now, clock.now + 1).events()
        assert stored.seq == order["seq"]
        assert [i.usd_total for i in feed.injected] == [2_500_000]


def test_a_bad_injection_is_refused_with_the_reason(sim_market, clock: Clock):
    with SimulatorServer(sim_market, require_key=False, clock=clock) as server:
        url = f"{server.base_url}/_sim/liquidation"
        missing = requests.post(url, json={"coin": "BTC"}, timeout=10)
        assert missing.status_code == 400
        assert "usd" in missing.json()["error"]
        unknown = requests.post(url, json={"coin": "NOPE", "usd": 1}, timeout=10)
        assert unknown.status_code == 400
        assert "'NOPE'" in unknown.json()["error"]
