"""Switchable faults, the admin endpoints and the request statistics."""

from __future__ import annotations

import time

import pytest
import requests

from cg_assets.sim import Faults, SimulatorServer

COINS = "/api/futures/supported-coins"


def test_latency_delays_every_response(api):
    api.server.faults.latency_s = 0.2
    started = time.perf_counter()
    assert api.get(COINS).status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_5xx_rate_answers_with_a_real_503_before_routing(api):
    api.server.faults.error_5xx_rate = 1.0
    assert api.get(COINS).status_code == 503
    assert api.server.stats.requests == 0


def test_body_500_rate_answers_with_an_envelope_error(api):
    api.server.faults.body_500_rate = 1.0
    response = api.get(COINS)
    assert response.status_code == 200
    assert response.json() == {"code": "500", "msg": "Server Error"}


def test_malformed_json_rate_truncates_the_body(api):
    api.server.faults.malformed_json_rate = 1.0
    response = api.get(COINS)
    assert response.status_code == 200
    assert response.text.startswith('{"code":"0"')
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_a_429_storm_rejects_the_next_n_requests_then_stops(api):
    api.server.faults.storm_429 = 2
    statuses = [api.get(COINS).status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert api.server.stats.rate_limited == 2
    assert api.server.faults.storm_429 == 0


def test_fault_rates_are_reproducible_for_a_seed(sim_market, clock):
    def statuses(seed: int) -> list[int]:
        with SimulatorServer(sim_market, require_key=False, clock=clock, fault_seed=seed) as srv:
            srv.faults.error_5xx_rate = 0.5
            with requests.Session() as session:
                return [session.get(srv.base_url + COINS).status_code for _ in range(20)]

    first = statuses(42)
    assert first == statuses(42)
    assert set(first) == {200, 503}
    assert first != statuses(43)


def test_faults_reject_bad_knobs_all_or_nothing():
    faults = Faults()
    with pytest.raises(ValueError, match="unknown fault"):
        faults.update({"latency_s": 1.0, "nope": 1})
    with pytest.raises(ValueError, match="within"):
        faults.update({"body_500_rate": 2})
    assert faults.latency_s == 0.0
    faults.update({"latency_s": 0.5, "storm_429": 3})
    faults.clear()
    assert faults.as_dict() == Faults().as_dict()


def test_admin_endpoints_control_faults_and_report_stats(api):
    url = api.server.base_url
    response = api.session.post(url + "/_sim/faults", json={"body_500_rate": 1.0})
    assert response.json()["body_500_rate"] == 1.0
    assert api.body(COINS)["code"] == "500"
    bad = api.session.post(url + "/_sim/faults", json={"storm_429": -1})
    assert bad.status_code == 400
    api.session.post(url + "/_sim/faults", json={"body_500_rate": 0})
    assert api.body(COINS)["code"] == "0"
    stats = api.session.get(url + "/_sim/stats").json()
    assert {k: stats[k] for k in ("requests", "rate_limited", "by_path")} == {
        "requests": 2,
        "rate_limited": 0,
        "by_path": {COINS: 2},
    }
    assert 0 < stats["first_at"] <= stats["last_at"]
    api.session.post(url + "/_sim/stats/reset")
    assert api.server.stats.requests == 0


def test_stats_log_routed_requests_in_order(api):
    api.get(COINS)
    api.get("/api/futures/price/history", exchange="OKX", symbol="BTC-USDT-SWAP", interval="4h")
    api.get("/api/unknown")
    stats = api.server.stats
    assert stats.requests == 3
    assert stats.by_path["/api/futures/price/history"] == 1
    assert stats.log == [
        (COINS, {}),
        (
            "/api/futures/price/history",
            {"exchange": "OKX", "symbol": "BTC-USDT-SWAP", "interval": "4h"},
        ),
        ("/api/unknown", {}),
    ]
    api.server.reset_stats()
    assert (stats.requests, stats.log, dict(stats.by_path)) == (0, [], {})
    assert (stats.first_at, stats.last_at) == (None, None)


def test_stop_closes_kept_alive_connections(api):
    url = api.server.base_url + COINS
    assert api.session.get(url).status_code == 200
    api.server.stop()
    with pytest.raises(requests.ConnectionError):
        api.session.get(url, timeout=5)
