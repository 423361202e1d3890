"""The REST server's own plumbing: concurrent clients, query parsing, control routes, the
request log. Endpoint answers, errors, limits and faults have their own modules."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import requests

from cg_assets.sim.rest import _LOG_CAP, Stats
from cg_assets_tests.test_sim.conftest import HOUR, Api

COINS = "/api/futures/supported-coins"
PRICE = "/api/futures/price/history"


def test_concurrent_clients_share_one_window_exactly(make_api):
    """Eight threads, each on its own connection, race for a limit of 25: exactly 25 requests
    are admitted, each admitted request saw a distinct usage count, and the stats agree."""
    api: Api = make_api(require_key=False, rate_limit_per_min=25)
    url = api.server.base_url + COINS

    def client(_: int) -> list[tuple[int, int]]:
        with requests.Session() as session:
            answers = [session.get(url, timeout=10) for _ in range(10)]
        return [(r.status_code, int(r.headers["API-KEY-USE-LIMIT"])) for r in answers]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client, range(8)) for a in batch]
    admitted = sorted(used for status, used in answers if status == 200)
    assert admitted == list(range(1, 26))
    assert sum(status == 429 for status, _ in answers) == 80 - 25
    assert (api.server.stats.requests, api.server.stats.rate_limited) == (25, 55)


def test_a_repeated_parameter_takes_its_first_value(api: Api):
    response = api.session.get(
        api.server.base_url + PRICE,
        params=[
            ("exchange", "Binance"),
            ("symbol", "BTCUSDT"),
            ("interval", "1h"),
            ("interval", "4h"),
            ("limit", "3"),
        ],
    )
    bars = response.json()["data"]
    times = [bar["time"] for bar in bars]
    assert [b - a for a, b in pairwise(times)] == [HOUR, HOUR]
    assert api.server.stats.log[-1][1]["interval"] == "1h"


def test_control_routes_answer_404_for_anything_else(api: Api):
    base = api.server.base_url
    answers = [
        api.session.get(base + "/_sim/nothing-here").status_code,
        api.session.post(base + "/_sim/stats").status_code,  # stats are read with GET
        api.session.get(base + "/_sim/liquidation").status_code,  # injection is a POST
        api.session.get(base + "/_sim/stats/reset").status_code,
    ]
    assert answers == [404] * 4
    assert api.server.stats.requests == 0  # control traffic is not API traffic


def test_the_request_log_keeps_the_newest_half_once_very_long():
    """A demo server runs for days: its log is cut to the newest half past the cap, while the
    counters keep counting everything."""
    stats = Stats()
    for n in range(_LOG_CAP + 1):
        stats.record(COINS, {"n": str(n)})
    assert stats.requests == _LOG_CAP + 1
    assert stats.by_path[COINS] == _LOG_CAP + 1
    assert len(stats.log) == _LOG_CAP // 2 + 1
    assert stats.log[0][1]["n"] == str(_LOG_CAP // 2)
    assert stats.log[-1][1]["n"] == str(_LOG_CAP)
    assert stats.as_dict()["requests"] == _LOG_CAP + 1
