from __future__ import annotations

import pytest

from cg_assets.coinglass.errors import (
    CoinGlassAuthError,
    CoinGlassBadRequest,
    CoinGlassError,
    CoinGlassNotFound,
    CoinGlassPlanError,
    CoinGlassRateLimited,
    CoinGlassServerError,
    CoinGlassTimeout,
    PairNotListedError,
    classify,
)
from cg_assets.coinglass.plans import Plan

OI = "/api/futures/open-interest/history"
HEATMAP = "/api/futures/liquidation/heatmap/model1"


def test_message_names_path_params_code_and_server_text():
    err = CoinGlassError(
        "400",
        "Required String parameter 'exchange_list' is not present",
        OI,
        {"symbol": "BTC", "interval": "1h"},
    )
    assert str(err) == (
        "CoinGlass /api/futures/open-interest/history (symbol=BTC, interval=1h) failed: "
        "code 400: Required String parameter 'exchange_list' is not present"
    )


def test_secret_looking_params_are_masked():
    err = CoinGlassError(
        "400", "bad", OI, {"symbol": "BTC", "api_key": "s3cr3t", "CG-API-KEY": "s3cr3t"}
    )
    assert "s3cr3t" not in str(err)
    assert "s3cr3t" not in repr(err.params)
    assert err.params["symbol"] == "BTC"


def test_gave_up_says_attempts_and_duration():
    err = CoinGlassServerError("500", "Server Error", OI).gave_up(6, 12.34)
    assert str(err).endswith("code 500: Server Error (gave up after 6 attempts over 12.3 s)")


@pytest.mark.parametrize(
    ("code", "msg", "cls"),
    [
        ("401", "Upgrade plan", CoinGlassPlanError),
        ("40001", "Upgrade plan", CoinGlassPlanError),
        ("401", "API key missing.", CoinGlassAuthError),
        ("400", "API key missing.", CoinGlassAuthError),
        ("400", "Invalid API key provided", CoinGlassAuthError),
        ("403", "Forbidden", CoinGlassAuthError),
        ("400", "Required String parameter 'range' is not present", CoinGlassBadRequest),
        ("405", "Method not allowed", CoinGlassBadRequest),
        ("422", "not acceptable", CoinGlassBadRequest),
        ("404", "not found", CoinGlassNotFound),
        ("408", "timeout", CoinGlassTimeout),
        ("429", "Too many requests", CoinGlassRateLimited),
        ("500", "Server Error", CoinGlassServerError),
        ("503", "unavailable", CoinGlassServerError),
        ("30001", "legacy", CoinGlassError),
    ],
)
def test_classify(code, msg, cls):
    err = classify(code, msg, OI, {"symbol": "BTC"}, Plan.STANDARD)
    assert type(err) is cls
    assert msg in str(err)


@pytest.mark.parametrize(
    ("cls", "transient"),
    [
        (CoinGlassPlanError, False),
        (CoinGlassAuthError, False),
        (CoinGlassBadRequest, False),
        (CoinGlassNotFound, False),
        (CoinGlassRateLimited, True),
        (CoinGlassServerError, True),
        (CoinGlassTimeout, True),
    ],
)
def test_only_retryable_failures_are_transient(cls, transient):
    assert cls.transient is transient


def test_plan_error_names_the_plan_an_endpoint_needs():
    err = classify("401", "Upgrade plan", HEATMAP, {"symbol": "BTCUSDT"}, Plan.STANDARD)
    assert "needs the Professional plan or higher (CG_PLAN is Standard)" in str(err)


def test_plan_error_names_the_plan_an_interval_needs():
    err = classify("401", "Upgrade plan", OI, {"interval": "1h"}, Plan.HOBBYIST)
    assert "interval 1h needs the Startup plan or higher (CG_PLAN is Hobbyist)" in str(err)


def test_plan_error_when_config_claims_enough_points_at_cg_plan():
    err = classify("401", "Upgrade plan", HEATMAP, {}, Plan.PROFESSIONAL)
    assert "check that CG_PLAN matches the key's subscription" in str(err)


def test_auth_error_tells_to_set_the_key():
    assert "set CG_API_KEY" in str(classify("401", "API key missing.", OI, {}, Plan.STANDARD))


def test_pair_not_listed_names_coin_exchange_and_the_way_out():
    err = PairNotListedError("HYPE", "OKX", "OKX lists no HYPE instruments")
    assert isinstance(err, LookupError)
    assert str(err) == (
        "HYPE has no USDT-margined perpetual on OKX: OKX lists no HYPE instruments; "
        "drop the pair or set CG_PAIR_OVERRIDES=OKX:HYPE=<instrument id>"
    )
