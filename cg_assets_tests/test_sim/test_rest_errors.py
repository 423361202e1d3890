"""Envelope and errors: HTTP 200 with a body code, except a real 404 and 405 (reference §2)."""

from __future__ import annotations

import pytest

from cg_assets_tests.test_sim.conftest import Api

PRICE = "/api/futures/price/history"
PAIR = {"exchange": "Binance", "symbol": "BTCUSDT", "interval": "1h", "limit": 2}


def error(api: Api, path: str, key: str | None = None, **params: object) -> tuple[str, str]:
    body = api.body(path, key, **params)
    assert "data" not in body
    return body["code"], body["msg"]


def test_a_missing_key_is_401_in_the_body(make_api):
    api = make_api(require_key=True)
    assert error(api, PRICE, **PAIR) == ("401", "API key missing.")
    assert error(api, PRICE, "", **PAIR) == ("401", "API key missing.")
    assert api.data(PRICE, "any-key", **PAIR)


def test_an_unknown_key_is_400_when_keys_are_configured(make_api):
    api = make_api(keys={"good": "professional"})
    assert error(api, PRICE, "bad", **PAIR) == ("400", "Invalid API key provided")
    assert len(api.data(PRICE, "good", **PAIR)) == 2


def test_keyless_requests_are_served_at_the_default_plan_when_keys_are_optional(make_api):
    api = make_api(keys={"good": "professional"}, require_key=False, plan="hobbyist")
    assert error(api, PRICE, **PAIR) == ("401", "Upgrade plan")  # 1h is below Hobbyist's 4h
    assert len(api.data(PRICE, **{**PAIR, "interval": "4h"})) == 2


def test_gated_endpoints_need_a_high_enough_plan(make_api):
    api = make_api(keys={"hobby": "hobbyist", "startup": "startup"})
    path = "/api/futures/liquidation/coin-list"
    assert error(api, path, "hobby", exchange="Binance") == ("401", "Upgrade plan")
    assert api.data(path, "startup", exchange="Binance")
    heatmap = "/api/futures/liquidation/aggregated-heatmap/model1"
    assert error(api, heatmap, "startup", symbol="BTC", range="3d") == ("401", "Upgrade plan")


@pytest.mark.parametrize(
    ("plan", "interval", "allowed"),
    [
        ("hobbyist", "1h", False),
        ("hobbyist", "4h", True),
        ("startup", "15m", False),
        ("startup", "30m", True),
        ("standard", "1m", True),
    ],
)
def test_intervals_below_the_plans_floor_need_an_upgrade(make_api, plan, interval, allowed):
    api = make_api(keys={"k": plan})
    body = api.body(PRICE, "k", **{**PAIR, "interval": interval})
    if allowed:
        assert body["code"] == "0"
    else:
        assert (body["code"], body["msg"]) == ("401", "Upgrade plan")


@pytest.mark.parametrize("interval", ["h1", "2m", "1M", "", "60"])
def test_unknown_intervals_are_400(api, interval):
    code, _ = error(api, PRICE, **{**PAIR, "interval": interval})
    assert code == "400"


def test_missing_required_parameters_are_named(api):
    path = "/api/futures/liquidation/aggregated-history"
    assert error(api, path, symbol="BTC", interval="1h") == (
        "400",
        "Required String parameter 'exchange_list' is not present",
    )
    assert error(api, PRICE, exchange="Binance", interval="1h")[1] == (
        "Required String parameter 'symbol' is not present"
    )


def test_malformed_numbers_are_400(api):
    code, msg = error(api, PRICE, **PAIR, start_time="yesterday")
    assert code == "400"
    assert "yesterday" in msg
    assert error(api, PRICE, **{**PAIR, "limit": 0})[0] == "400"


def test_a_pair_not_listed_on_the_exchange_is_400_naming_it(api):
    code, msg = error(api, PRICE, **{**PAIR, "exchange": "OKX", "symbol": "HYPE-USDT-SWAP"})
    assert code == "400"
    assert "HYPE-USDT-SWAP" in msg
    assert "OKX" in msg
    code, msg = error(api, PRICE, **{**PAIR, "symbol": "BTC-USDT-SWAP"})  # OKX's id on Binance
    assert (code, "BTC-USDT-SWAP" in msg) == ("400", True)


def test_unknown_exchanges_and_coins_are_400(api):
    assert error(api, PRICE, **{**PAIR, "exchange": "binance"})[0] == "400"
    oi = "/api/futures/open-interest/aggregated-history"
    code, msg = error(api, oi, symbol="BTCUSDT", interval="1h")  # a pair where a coin belongs
    assert code == "400"
    assert "BTCUSDT" in msg
    taker = "/api/futures/aggregated-taker-buy-sell-volume/history"
    assert error(api, taker, exchange_list="Binance,Nope", symbol="BTC", interval="1h")[0] == "400"


def test_funding_history_of_a_dated_future_is_empty(api):
    path = "/api/futures/funding-rate/history"
    assert api.data(path, **{**PAIR, "symbol": "BTCUSDT_260327"}) == []


def test_unknown_paths_are_a_real_404(api):
    response = api.get("/api/futures/no-such-thing")
    assert response.status_code == 404
    assert not response.headers["Content-Type"].startswith("application/json")


def test_other_methods_are_405(api):
    response = api.session.post(api.server.base_url + PRICE, params=PAIR)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert api.server.stats.requests == 0
