"""Field names and the string-vs-number mix per endpoint, as the reference documents them."""

from __future__ import annotations

import json

import pytest

from cg_assets_tests.test_sim.conftest import HOUR, NOW_MS

S, N = "string", "number"
OHLC_S = {"open": S, "high": S, "low": S, "close": S}
H = {"interval": "1h", "limit": 24}

CASES = [
    ("/api/futures/funding-rate/history", {"exchange": "OKX", "symbol": "BTC-USDT-SWAP"}, OHLC_S),
    ("/api/futures/funding-rate/oi-weight-history", {"symbol": "BTC"}, OHLC_S),
    ("/api/futures/funding-rate/vol-weight-history", {"symbol": "BTC"}, OHLC_S),
    # Documented as strings; `close` was observed live as a number (reference §5.3).
    (
        "/api/futures/open-interest/history",
        {"exchange": "Binance", "symbol": "BTCUSDT"},
        {"open": S, "high": S, "low": S, "close": N},
    ),
    (
        "/api/futures/open-interest/aggregated-history",
        {"symbol": "ETH"},
        {"open": S, "high": S, "low": S, "close": N},
    ),
    (
        "/api/futures/v2/taker-buy-sell-volume/history",
        {"exchange": "Bybit", "symbol": "BTCUSDT"},
        {"taker_buy_volume_usd": S, "taker_sell_volume_usd": S},
    ),
    (
        "/api/futures/taker-buy-sell-volume/history",
        {"exchange": "Bybit", "symbol": "BTCUSDT"},
        {"taker_buy_volume_usd": S, "taker_sell_volume_usd": S},
    ),
    (
        "/api/futures/aggregated-taker-buy-sell-volume/history",
        {"exchange_list": "Binance,OKX,Bybit", "symbol": "BTC"},
        {"aggregated_buy_volume_usd": N, "aggregated_sell_volume_usd": N},
    ),
    (
        "/api/futures/global-long-short-account-ratio/history",
        {"exchange": "Binance", "symbol": "BTCUSDT"},
        {
            "global_account_long_percent": N,
            "global_account_short_percent": N,
            "global_account_long_short_ratio": N,
        },
    ),
    (
        "/api/futures/top-long-short-account-ratio/history",
        {"exchange": "Binance", "symbol": "BTCUSDT"},
        {
            "top_account_long_percent": N,
            "top_account_short_percent": N,
            "top_account_long_short_ratio": N,
        },
    ),
    (
        "/api/futures/top-long-short-position-ratio/history",
        {"exchange": "Binance", "symbol": "BTCUSDT"},
        {
            "top_position_long_percent": N,
            "top_position_short_percent": N,
            "top_position_long_short_ratio": N,
        },
    ),
    (
        "/api/futures/liquidation/history",
        {"exchange": "Hyperliquid", "symbol": "BTC"},
        {"long_liquidation_usd": S, "short_liquidation_usd": S},
    ),
    (
        "/api/futures/liquidation/aggregated-history",
        {"exchange_list": "Binance,OKX", "symbol": "BTC"},
        {"aggregated_long_liquidation_usd": N, "aggregated_short_liquidation_usd": N},
    ),
    (
        "/api/futures/price/history",
        {"exchange": "Bitget", "symbol": "BTCUSDT_UMCBL"},
        {**OHLC_S, "volume_usd": S},
    ),
]


def kind(value: object) -> str:
    if isinstance(value, str):
        float(value)  # a decimal string, never "NaN"-like garbage
        return S
    assert isinstance(value, int | float), value
    assert not isinstance(value, bool), value
    return N


@pytest.mark.parametrize(("path", "params", "expected"), CASES, ids=[c[0] for c in CASES])
def test_history_fields_and_types(api, path, params, expected):
    body = api.body(path, **params, **H)
    assert body["code"] == "0"
    assert body["msg"] == "success"
    rows = body["data"]
    assert len(rows) == 24
    for row in rows:
        assert isinstance(row["time"], int)
        assert row["time"] % HOUR == 0
        assert {k: kind(v) for k, v in row.items() if k != "time"} == expected


def test_strings_are_plain_decimals(api):
    row = api.data("/api/futures/price/history", exchange="Binance", symbol="BTCUSDT", **H)[0]
    for key in ("open", "high", "low", "close"):
        whole, _, fraction = row[key].partition(".")
        assert whole.isdigit()
        assert len(fraction) <= 1  # BTC's tick is 0.1
        assert not fraction.endswith("0")


def test_coin_unit_gives_open_interest_in_coins(api):
    usd = api.data("/api/futures/open-interest/aggregated-history", symbol="BTC", **H)
    coins = api.data(
        "/api/futures/open-interest/aggregated-history", symbol="BTC", unit="coin", **H
    )
    price = float(
        api.data("/api/futures/price/history", exchange="Binance", symbol="BTCUSDT", **H)[-1][
            "close"
        ]
    )
    assert usd[-1]["close"] / coins[-1]["close"] == pytest.approx(price, rel=0.01)


def test_funding_exchange_list_reports_current_rates_per_margin_type(api):
    rows = {row["symbol"]: row for row in api.data("/api/futures/funding-rate/exchange-list")}
    assert set(rows) >= {"BTC", "ETH", "SOL", "XRP", "DOGE", "BNB", "HYPE"}
    stable = {e["exchange"]: e for e in rows["BTC"]["stablecoin_margin_list"]}
    assert {k: v["funding_rate_interval"] for k, v in stable.items()} == {
        "Binance": 8,
        "OKX": 8,
        "Bybit": 8,
        "Bitget": 8,
        "Hyperliquid": 1,
    }
    for entry in [*stable.values(), *rows["BTC"]["token_margin_list"]]:
        assert isinstance(entry["funding_rate"], float)
        step = entry["funding_rate_interval"] * HOUR
        assert entry["next_funding_time"] % step == 0
        assert 0 < entry["next_funding_time"] - NOW_MS <= step
    assert "OKX" not in {e["exchange"] for e in rows["HYPE"]["stablecoin_margin_list"]}


def test_exchange_pairs_are_keyed_by_exchange_with_native_ids(api):
    pairs = api.data("/api/futures/supported-exchange-pairs")
    assert set(pairs) == {"Binance", "OKX", "Bybit", "Bitget", "Hyperliquid"}
    okx = {p["instrument_id"]: p for p in pairs["OKX"]}
    assert okx["BTC-USDT-SWAP"] == {
        "instrument_id": "BTC-USDT-SWAP",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "settlement_currency": "USDT",
        "max_leverage": 100,
        "funding_interval": 8,
        "price_tick_size": 0.1,
    }
    assert not any(p["base_asset"] == "HYPE" for p in pairs["OKX"])
    only = api.data("/api/futures/supported-exchange-pairs", exchange="Hyperliquid")
    assert list(only) == ["Hyperliquid"]
    assert {p["instrument_id"] for p in only["Hyperliquid"]} >= {"BTC", "HYPE"}


def test_reference_lists_and_subscription(make_api):
    api = make_api(keys={"k": "standard"})
    assert api.data("/api/futures/supported-coins", "k")[:3] == ["BTC", "ETH", "SOL"]
    assert "Hyperliquid" in api.data("/api/futures/supported-exchanges", "k")
    sub = api.data("/api/user/account/subscription", "k")
    assert sub["level"] == "STANDARD"
    assert sub["expired"] is False
    assert sub["expire_time"] > NOW_MS


def test_liquidation_lists_total_their_rows(api):
    rows = api.data("/api/futures/liquidation/exchange-list", range="4h", symbol="BTC")
    assert rows[0]["exchange"] == "All"
    assert rows[0]["liquidation_usd"] == pytest.approx(sum(r["liquidation_usd"] for r in rows[1:]))
    coins = api.data("/api/futures/liquidation/coin-list", exchange="OKX")
    assert "HYPE" not in {row["symbol"] for row in coins}
    for row in coins:
        assert row["liquidation_usd_1h"] <= row["liquidation_usd_4h"] <= row["liquidation_usd_24h"]


def test_success_bodies_are_compact_json_envelopes(api):
    response = api.get("/api/futures/supported-coins")
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.content)["code"] == "0"
