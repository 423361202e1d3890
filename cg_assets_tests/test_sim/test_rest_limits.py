"""Rate limiting: a sliding minute per key, usage headers on every response, 429 over the limit."""

from __future__ import annotations

from cg_assets.coinglass.plans import PLAN_LIMITS, Plan
from cg_assets_tests.test_sim.conftest import Api

COINS = "/api/futures/supported-coins"


def usage(response) -> tuple[int, int]:
    return int(response.headers["API-KEY-USE-LIMIT"]), int(response.headers["API-KEY-MAX-LIMIT"])


def test_usage_headers_count_requests_in_the_window(make_api):
    api = make_api(require_key=False, rate_limit_per_min=3)
    seen = [usage(api.get(COINS)) for _ in range(3)]
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_over_the_limit_is_http_429_with_headers_and_not_counted(make_api, clock):
    api = make_api(require_key=False, rate_limit_per_min=3)
    for _ in range(3):
        assert api.get(COINS).status_code == 200
    rejected = api.get(COINS)
    assert rejected.status_code == 429
    assert rejected.json() == {"code": "429", "msg": "Too Many Requests"}
    assert usage(rejected) == (3, 3)
    assert api.server.stats.rate_limited == 1
    assert api.server.stats.requests == 3
    clock.now += 60_000
    assert usage(api.get(COINS)) == (1, 3)


def test_the_window_slides_rather_than_resetting(make_api, clock):
    api = make_api(require_key=False, rate_limit_per_min=3)
    api.get(COINS)
    clock.now += 30_000
    api.get(COINS)
    api.get(COINS)
    clock.now += 30_001  # only the first request has left the window
    assert usage(api.get(COINS)) == (3, 3)
    assert api.get(COINS).status_code == 429


def test_each_key_has_its_own_window_and_its_plans_limit(make_api):
    api = make_api(keys={"a": "hobbyist", "b": "professional"})
    assert usage(api.get(COINS, "a")) == (1, PLAN_LIMITS[Plan.HOBBYIST].requests_per_minute)
    assert usage(api.get(COINS, "b")) == (1, PLAN_LIMITS[Plan.PROFESSIONAL].requests_per_minute)
    assert usage(api.get(COINS, "a")) == (2, 30)


def test_the_hobbyist_limit_is_enforced(make_api):
    api: Api = make_api(keys={"a": "hobbyist"})
    statuses = [api.get(COINS, "a").status_code for _ in range(31)]
    assert statuses == [200] * 30 + [429]


def test_error_bodies_carry_the_headers_too(make_api):
    api = make_api(require_key=False, rate_limit_per_min=5)
    response = api.get("/api/futures/price/history", exchange="Binance")
    assert response.json()["code"] == "400"
    assert usage(response) == (1, 5)
