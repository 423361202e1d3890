"""The client over real HTTP against the in-process CoinGlass simulator."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from cg_assets.coinglass import (
    EXCHANGE_PAIRS_PATH,
    CoinGlassAuthError,
    CoinGlassBadRequest,
    CoinGlassNotFound,
    CoinGlassPlanError,
    CoinGlassProtocolError,
    CoinGlassRateLimited,
    CoinGlassServerError,
    CoinGlassTimeout,
    PairNotListedError,
    RateLimiter,
)

from .clocks import VirtualClock
from .conftest import API_KEY

H = 3_600_000
PRICE = "/api/futures/price/history"
BINANCE_BTC = {"exchange": "Binance", "symbol": "BTCUSDT"}
LIQ_AGG = "/api/futures/liquidation/aggregated-history"
OI = "/api/futures/open-interest/history"
HEATMAP = "/api/futures/liquidation/aggregated-heatmap/model1"


def hours_ago(n: int) -> int:
    """A bar boundary n hours before the current hour, inside every plan's 1h depth."""
    return (int(time.time() * 1000) // H - n) * H


# -- envelope and errors ----------------------------------------------------------------------


def test_get_returns_data_as_sent(sim, make_client):
    client = make_client(sim.base_url)
    assert "BTC" in client.get("/api/futures/supported-coins")
    bars = client.get(PRICE, {**BINANCE_BTC, "interval": "1h", "limit": 2})
    assert isinstance(bars[0]["close"], str)  # get() does not coerce
    assert client.stats.requests == 2
    assert client.stats.by_path[PRICE] == 1


def test_bad_request_shows_the_server_message(sim, make_client):
    client = make_client(sim.base_url)
    with pytest.raises(CoinGlassBadRequest) as info:
        client.get(LIQ_AGG, {"symbol": "BTC", "interval": "1h"})
    assert str(info.value) == (
        f"CoinGlass {LIQ_AGG} (symbol=BTC, interval=1h) failed: code 400: "
        "Required String parameter 'exchange_list' is not present"
    )
    assert sim.stats.requests == 1


def test_gated_endpoint_names_the_plan_it_needs(start_sim, make_client):
    sim = start_sim(plan="standard")
    client = make_client(sim.base_url, plan="standard")
    with pytest.raises(CoinGlassPlanError, match="needs the Professional plan or higher"):
        client.get(HEATMAP, {"symbol": "BTC", "range": "3d"})
    assert client.stats.requests == 1


def test_interval_below_the_plan_floor_names_the_plan_it_needs(start_sim, make_client):
    sim = start_sim(plan="hobbyist")
    client = make_client(sim.base_url, plan="hobbyist")
    with pytest.raises(CoinGlassPlanError, match="interval 1h needs the Startup plan or higher"):
        client.history(OI, BINANCE_BTC, "1h", hours_ago(10), hours_ago(0))


def test_missing_key_says_to_set_cg_api_key(start_sim, make_client):
    sim = start_sim(require_key=True)
    with pytest.raises(CoinGlassAuthError, match=r"API key missing.*set CG_API_KEY"):
        make_client(sim.base_url, api_key=None).get("/api/futures/supported-coins")


def test_rejected_key_is_permanent_and_never_shown(start_sim, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    sim = start_sim(require_key=True, keys={"another-key": "professional"})
    client = make_client(sim.base_url)
    with pytest.raises(CoinGlassAuthError, match="Invalid API key provided") as info:
        client.get("/api/futures/supported-coins")
    assert client.stats.requests == 1
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(info.value.args)
    assert API_KEY not in caplog.text


def test_unknown_path_is_not_found(sim, make_client):
    with pytest.raises(CoinGlassNotFound, match="HTTP 404"):
        make_client(sim.base_url).get("/api/futures/no-such-endpoint")


@pytest.mark.parametrize(
    ("knob", "error", "text"),
    [
        ("malformed_json_rate", CoinGlassProtocolError, "malformed JSON"),
        ("error_5xx_rate", CoinGlassServerError, "HTTP 503"),
        ("body_500_rate", CoinGlassServerError, "code 500: Server Error"),
    ],
)
def test_transient_failures_are_retried_up_to_max_attempts(
    sim, make_client, caplog, knob, error, text
):
    caplog.set_level(logging.WARNING, logger="cg_assets.coinglass")
    setattr(sim.faults, knob, 1.0)
    client = make_client(sim.base_url, max_attempts=3)
    with pytest.raises(error) as info:
        client.get("/api/futures/supported-coins")
    assert text in str(info.value)
    assert "gave up after 3 attempts over" in str(info.value)
    assert (client.stats.requests, client.stats.retries) == (3, 2)
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2


def test_a_429_storm_is_ridden_out(sim, make_client):
    sim.faults.storm_429 = 2
    client = make_client(sim.base_url)
    assert "BTC" in client.get("/api/futures/supported-coins")
    assert (client.stats.http_429, client.stats.retries, client.stats.requests) == (2, 2, 3)


def test_a_429_storm_longer_than_the_attempts_gives_up(sim, make_client):
    sim.faults.storm_429 = 10
    client = make_client(sim.base_url, max_attempts=4)
    with pytest.raises(CoinGlassRateLimited, match=r"HTTP 429.*gave up after 4 attempts"):
        client.get("/api/futures/supported-coins")
    assert sim.stats.rate_limited == 4


def test_slow_responses_time_out_and_are_retried(sim, make_client):
    sim.faults.latency_s = 0.3
    client = make_client(sim.base_url, timeout_s=0.05, max_attempts=2)
    with pytest.raises(CoinGlassTimeout, match=r"no response within 0.05 s.*gave up after 2"):
        client.get("/api/futures/supported-coins")


# -- rate limiting (virtual time: minutes of traffic in milliseconds) -------------------------


def virtual_sim(start_sim, vclock: VirtualClock, limit: int):
    """A simulator whose rate window runs on `vclock`, keyed like the real API."""
    return start_sim(rate_limit_per_min=limit, clock=lambda: int(vclock() * 1000))


def hammer(vclock: VirtualClock, clients, per_client: int, threads_per_client: int) -> None:
    """Each client makes `per_client` requests, spread over its own threads."""
    jobs = [
        (c, per_client // threads_per_client) for c in clients for _ in range(threads_per_client)
    ]
    lock = threading.Lock()

    def worker() -> None:
        with lock:
            client, n = jobs.pop()
        for _ in range(n):
            client.get("/api/futures/supported-coins")

    vclock.run_threads(len(jobs), worker)


@pytest.fixture
def wall_vclock() -> VirtualClock:
    return VirtualClock(start=time.time())


def test_four_threads_stay_under_the_limit(start_sim, make_client, wall_vclock):
    sim = virtual_sim(start_sim, wall_vclock, limit=120)
    limiter = RateLimiter(120, clock=wall_vclock, sleep=wall_vclock.sleep)
    client = make_client(sim.base_url, limiter=limiter)
    started = wall_vclock()
    hammer(wall_vclock, [client], per_client=152, threads_per_client=4)
    assert (sim.stats.rate_limited, client.stats.http_429) == (0, 0)
    assert sim.stats.requests == 152
    assert wall_vclock() - started >= 151 * limiter.spacing_s - 1e-3


def test_a_configured_rate_above_the_key_limit_is_corrected(start_sim, make_client, wall_vclock):
    sim = virtual_sim(start_sim, wall_vclock, limit=120)
    limiter = RateLimiter(1200, clock=wall_vclock, sleep=wall_vclock.sleep)
    client = make_client(sim.base_url, limiter=limiter)
    hammer(wall_vclock, [client], per_client=152, threads_per_client=4)
    assert sim.stats.rate_limited == 0
    assert limiter.rate_per_min == 120


def test_usage_headers_let_two_processes_share_a_key(start_sim, make_client, wall_vclock):
    sim = virtual_sim(start_sim, wall_vclock, limit=120)
    limiters = [RateLimiter(120, clock=wall_vclock, sleep=wall_vclock.sleep) for _ in range(2)]
    clients = [make_client(sim.base_url, limiter=limiter) for limiter in limiters]
    started = wall_vclock()
    hammer(wall_vclock, clients, per_client=120, threads_per_client=2)
    assert sim.stats.rate_limited == 0
    assert sim.stats.requests == 240
    # Alone, each would finish in ~63 s; sharing the key they must take about twice as long.
    assert wall_vclock() - started > 120 * limiters[0].spacing_s * 1.5


# -- history and pagination -------------------------------------------------------------------


def price_requests(sim) -> list[dict[str, str]]:
    return [params for path, params in sim.stats.log if path == PRICE]


@pytest.mark.parametrize(
    ("bars", "requests"),
    [(1, 1), (999, 1), (1000, 1), (1001, 2), (2500, 3)],
)
def test_history_returns_exactly_the_range_in_ceil_bars_over_1000_requests(
    sim, make_client, bars, requests
):
    end = hours_ago(24)
    start = end - bars * H
    out = make_client(sim.base_url).history(PRICE, BINANCE_BTC, "1h", start, end)
    assert [row["time"] for row in out] == list(range(start, end, H))
    assert len(price_requests(sim)) == requests


def test_history_windows_are_aligned_and_cover_the_range(sim, make_client):
    end = hours_ago(24)
    start = end - 2500 * H + 1  # one ms past a boundary: the first bar is the next one
    out = make_client(sim.base_url).history(PRICE, BINANCE_BTC, "1h", start, end)
    first = start - 1 + H
    assert [row["time"] for row in out] == list(range(first, end, H))
    sent = [(int(p["start_time"]), int(p["end_time"])) for p in price_requests(sim)]
    assert sent == [
        (first, first + 1000 * H),
        (first + 1000 * H, first + 2000 * H),
        (first + 2000 * H, end),
    ]
    assert {(p["limit"], p["interval"], p["symbol"]) for p in price_requests(sim)} == {
        ("1000", "1h", "BTCUSDT")
    }


def test_history_of_five_minute_bars_with_a_partial_last_page(sim, make_client):
    step = 5 * 60_000
    end = hours_ago(24)
    start = end - 2001 * step
    out = make_client(sim.base_url).history(PRICE, BINANCE_BTC, "5m", start, end)
    assert len(out) == 2001
    assert out[-1]["time"] == end - step
    assert len(price_requests(sim)) == 3


def test_history_coerces_string_numbers(sim, make_client):
    out = make_client(sim.base_url).history(PRICE, BINANCE_BTC, "1h", hours_ago(30), hours_ago(24))
    assert len(out) == 6
    for row in out:
        assert type(row["time"]) is int
        assert all(type(row[k]) is float for k in ("open", "high", "low", "close", "volume_usd"))
        assert row["low"] <= min(row["open"], row["close"]) <= row["high"]


def test_a_range_without_a_bar_boundary_costs_no_request(sim, make_client):
    start = hours_ago(24) + 1
    assert make_client(sim.base_url).history(PRICE, BINANCE_BTC, "1h", start, start + H - 2) == []
    assert sim.stats.requests == 0


# -- instruments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coin", "exchange", "pair"),
    [
        ("BTC", "OKX", "BTC-USDT-SWAP"),
        ("BTC", "Binance", "BTCUSDT"),
        ("ETH", "Bybit", "ETHUSDT"),
        ("SOL", "Bitget", "SOLUSDT_UMCBL"),
    ],
)
def test_resolves_the_usdt_perpetual(sim, make_client, coin, exchange, pair):
    assert make_client(sim.base_url).resolve_pair(coin, exchange) == pair


def test_coin_not_listed_on_the_exchange(sim, make_client):
    with pytest.raises(PairNotListedError, match="HYPE has no USDT-margined perpetual on OKX"):
        make_client(sim.base_url).resolve_pair("HYPE", "OKX")


def test_exchange_names_are_case_sensitive_with_a_hint(sim, make_client):
    with pytest.raises(PairNotListedError, match="did you mean 'OKX'"):
        make_client(sim.base_url).resolve_pair("BTC", "okx")


def test_overrides_win_without_a_request(sim, make_client):
    client = make_client(sim.base_url)
    assert (
        client.resolve_pair("BTC", "OKX", {("OKX", "BTC"): "BTC-USDT-SWAP-X"}) == "BTC-USDT-SWAP-X"
    )
    assert client.stats.requests == 0


def test_exchange_pairs_are_fetched_once_for_many_resolutions(sim, make_client):
    client = make_client(sim.base_url)
    resolved: list[str] = []

    def resolve_all() -> None:
        for coin in ("BTC", "ETH", "SOL"):
            for exchange in ("Binance", "OKX", "Bybit"):
                resolved.append(client.resolve_pair(coin, exchange))

    threads = [threading.Thread(target=resolve_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(resolved) == 36
    assert sim.stats.by_path[EXCHANGE_PAIRS_PATH] == 1
    assert client.stats.requests == 1
