"""Client behaviour on scripted responses: envelope variants, retries, masking."""

from __future__ import annotations

import logging
import socket

import pytest

from cg_assets.coinglass import (
    CoinGlassAuthError,
    CoinGlassError,
    CoinGlassProtocolError,
    CoinGlassRateLimited,
    CoinGlassServerError,
    RateLimiter,
)

from .clocks import FakeClock
from .conftest import API_KEY
from .stub import Reply, StubServer, ok

COINS = "/api/futures/supported-coins"
OI = "/api/futures/open-interest/aggregated-history"
H = 3_600_000
SERVER_ERROR = Reply(body={"code": "500", "msg": "Server Error"})


@pytest.mark.parametrize("code", ["0", 0])
def test_success_envelope_with_string_or_int_code(make_client, code):
    with StubServer(ok(["BTC", "ETH"], code)) as stub:
        assert make_client(stub.base_url).get(COINS) == ["BTC", "ETH"]


def test_sends_the_key_header_accept_and_params(make_client):
    with StubServer(ok([])) as stub:
        make_client(stub.base_url + "/").get(OI, {"symbol": "BTC", "interval": "1h"})
    (seen,) = stub.seen
    assert seen.path == OI
    assert seen.params == {"symbol": "BTC", "interval": "1h"}
    assert seen.headers["CG-API-KEY"] == API_KEY
    assert seen.headers["accept"] == "application/json"


def test_no_key_header_without_a_key(make_client):
    with StubServer(ok([])) as stub:
        make_client(stub.base_url, api_key=None).get(COINS)
    assert "CG-API-KEY" not in stub.seen[0].headers


def test_http_5xx_is_retried_and_logged(make_client, caplog):
    caplog.set_level(logging.WARNING, logger="cg_assets.coinglass")
    with StubServer(Reply(503, b"<html>busy</html>"), ok([1])) as stub:
        client = make_client(stub.base_url)
        assert client.get(COINS) == [1]
    assert (client.stats.requests, client.stats.retries) == (2, 1)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert COINS in record.getMessage()
    assert "attempt 1/6" in record.getMessage()
    assert "HTTP 503" in record.getMessage()


def test_body_500_exhausts_attempts_with_a_clear_error(make_client):
    with StubServer(SERVER_ERROR) as stub:
        client = make_client(stub.base_url, max_attempts=3)
        with pytest.raises(CoinGlassServerError) as info:
            client.get(OI, {"symbol": "BTC"})
    assert len(stub.seen) == 3
    assert client.stats.retries == 2
    text = str(info.value)
    assert text.startswith(f"CoinGlass {OI} (symbol=BTC) failed: code 500: Server Error")
    assert "gave up after 3 attempts over" in text


def test_retry_after_pauses_the_shared_limiter(make_client):
    clock = FakeClock()
    limiter = RateLimiter(60_000, 1.0, clock=clock, sleep=clock.sleep)
    with StubServer(Reply(429, {"code": "429"}, {"Retry-After": "7"}), ok([1])) as stub:
        client = make_client(stub.base_url, limiter=limiter)
        assert client.get(COINS) == [1]
    assert clock() >= 1007
    assert (client.stats.http_429, client.stats.retries) == (1, 1)


def test_retry_after_beyond_the_budget_gives_up_at_once(make_client):
    with StubServer(Reply(429, b"", {"Retry-After": "600"})) as stub:
        client = make_client(stub.base_url, max_retry_seconds=60)
        with pytest.raises(CoinGlassRateLimited, match="gave up after 1 attempt over"):
            client.get(COINS)
    assert len(stub.seen) == 1


def test_a_body_that_is_not_an_envelope_is_retried(make_client):
    with StubServer(Reply(body=["not", "an", "envelope"]), ok([1])) as stub:
        assert make_client(stub.base_url).get(COINS) == [1]
    assert len(stub.seen) == 2


def test_unreachable_server_is_a_transient_error(make_client):
    with socket.socket() as sock:  # a port that is certainly closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", max_attempts=2)
    with pytest.raises(CoinGlassServerError, match=r"connection failed.*gave up after 2 attempts"):
        client.get(COINS)


def test_http_401_with_an_envelope_is_an_auth_error_and_not_retried(make_client):
    stub = StubServer(Reply(401, {"code": "401", "msg": "Invalid API key"}))
    with stub, pytest.raises(CoinGlassAuthError, match="set CG_API_KEY"):
        make_client(stub.base_url).get(COINS)
    assert len(stub.seen) == 1


def test_an_echoed_key_never_reaches_errors_or_logs(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    echo = {"code": "500", "msg": f"backend rejected key {API_KEY}"}
    bad_key = {"code": "400", "msg": f"Invalid API key provided: {API_KEY}"}
    with (
        StubServer(Reply(body=echo), Reply(body=bad_key)) as stub,
        pytest.raises(CoinGlassAuthError) as info,
    ):
        make_client(stub.base_url).get(COINS, {"symbol": "BTC"})
    assert "backend rejected key ***" in caplog.text
    assert API_KEY not in caplog.text
    assert API_KEY not in str(info.value)
    assert "Invalid API key provided: ***" in str(info.value)


def test_the_key_is_refused_as_a_query_parameter(make_client):
    with StubServer(ok([])) as stub:
        with pytest.raises(ValueError, match="CG-API-KEY header") as info:
            make_client(stub.base_url).get(COINS, {"api_key": API_KEY})
        assert stub.seen == []
    assert API_KEY not in str(info.value)


def test_history_treats_null_data_as_no_bars(make_client):
    with StubServer(ok(None)) as stub:
        assert make_client(stub.base_url).history(OI, {"symbol": "BTC"}, "1h", 0, H) == []


def test_history_rejects_data_that_is_not_a_list(make_client):
    stub = StubServer(ok({"time": 0}))
    with stub, pytest.raises(CoinGlassProtocolError, match="expected a list of bars, got dict"):
        make_client(stub.base_url).history(OI, {"symbol": "BTC"}, "1h", 0, H)


def test_unknown_body_code_is_permanent(make_client):
    stub = StubServer(Reply(body={"code": "30001", "msg": "legacy"}))
    with stub, pytest.raises(CoinGlassError, match="code 30001: legacy"):
        make_client(stub.base_url).get(COINS)
    assert len(stub.seen) == 1


def test_history_merges_overlapping_pages_and_trims_to_the_range(make_client):
    start, end = 0, 1500 * H
    page1 = [{"time": t * H, "v": "1"} for t in range(0, 1001)]  # one bar past its window
    page2 = [{"time": t * H, "v": 2} for t in range(1000, 1501)]  # and one past the range
    with StubServer(ok(page1), ok(page2)) as stub:
        out = make_client(stub.base_url).history(OI, {"symbol": "BTC"}, "1h", start, end)
    assert [row["time"] for row in out] == [t * H for t in range(1500)]
    assert out[999]["v"] == 1.0
    assert out[1000]["v"] == 2.0  # the later page wins the duplicate
    assert [s.params["start_time"] for s in stub.seen] == ["0", str(1000 * H)]
