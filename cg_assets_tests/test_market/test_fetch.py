from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS
from cg_assets.market.fetch import (
    MarketDataError,
    fetch_by_asset,
    minimum_requests,
    plan_requests,
    rows_to_table,
)
from cg_assets.market.series import MARKET_ASSETS, MARKET_ASSETS_BY_NAME, Scope
from cg_assets.tables import split_days

T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)


def fake_pair(coin: str, exchange: str) -> str:
    return f"{exchange[:2].upper()}-{coin}"


def test_plan_covers_every_series_once():
    requests = plan_requests(
        MARKET_ASSETS, ["BTC", "ETH", "SOL"], ["Binance", "OKX", "Bybit"], fake_pair
    )
    per_asset = {a.name: sum(r.asset is a for r in requests) for a in MARKET_ASSETS}
    assert per_asset == {
        "funding_rate_ohlc": 9,
        "funding_rate_weighted_ohlc": 6,
        "open_interest_ohlc": 3,
        "taker_volume": 3,
        "long_short_ratio": 27,
        "liquidation_history": 3,
        "price_ohlc": 9,
    }
    assert len({(r.endpoint.path, tuple(sorted(r.params.items()))) for r in requests}) == 60


def test_params_follow_each_endpoint_scope():
    requests = plan_requests(MARKET_ASSETS, ["BTC"], ["Binance", "OKX"], fake_pair)
    by_scope = {r.endpoint.scope: r for r in requests}
    assert by_scope[Scope.PAIR].params["symbol"] in {"BI-BTC", "OK-BTC"}
    assert by_scope[Scope.COIN].params["symbol"] == "BTC"
    assert by_scope[Scope.COIN_EXCHANGES].params["exchange_list"] == "Binance,OKX"
    assert "exchange" not in by_scope[Scope.COIN].params


def test_pairs_are_resolved_once_per_coin_and_exchange():
    calls: list[tuple[str, str]] = []

    def resolve(coin: str, exchange: str) -> str:
        calls.append((coin, exchange))
        return coin + exchange

    plan_requests(MARKET_ASSETS, ["BTC", "ETH"], ["Binance", "OKX"], resolve)
    assert sorted(calls) == sorted({(c, e) for c in ("BTC", "ETH") for e in ("Binance", "OKX")})


@pytest.mark.parametrize(
    ("days", "series", "expected"),
    [(1, 1, 1), (41, 1, 1), (42, 1, 2), (90, 60, 180), (365, 60, 540)],
)
def test_minimum_requests(days: int, series: int, expected: int):
    assert minimum_requests(series, T0, T0 + days * DAY_MS, HOUR_MS) == expected


def test_rows_become_typed_columns():
    asset = MARKET_ASSETS_BY_NAME["long_short_ratio"]
    [request] = [
        r
        for r in plan_requests([asset], ["BTC"], ["OKX"], fake_pair)
        if r.endpoint.constants["scope"] == "top_account"
    ]
    rows = [
        {
            "time": T0,
            "top_account_long_percent": 60.0,
            "top_account_short_percent": 40.0,
            "top_account_long_short_ratio": 1.5,
        }
    ]
    table = rows_to_table(asset, [(request, rows)])
    assert table.schema == asset.schema
    assert table.to_pylist()[0] == {
        "ts": datetime(2026, 3, 1, tzinfo=UTC),
        "symbol": "BTC",
        "exchange": "OKX",
        "pair": "OK-BTC",
        "scope": "top_account",
        "long_percent": 60.0,
        "short_percent": 40.0,
        "long_short_ratio": 1.5,
    }


@pytest.mark.parametrize("bad", [None, "abc", float("nan")])
def test_bad_value_names_series_field_and_value(bad: object):
    asset = MARKET_ASSETS_BY_NAME["price_ohlc"]
    [request] = plan_requests([asset], ["BTC"], ["Binance"], fake_pair)
    row = {"time": T0, "open": 1.0, "high": 2.0, "low": 0.5, "close": bad, "volume_usd": 3.0}
    with pytest.raises(MarketDataError) as info:
        rows_to_table(asset, [(request, [row])])
    msg = str(info.value)
    assert "/api/futures/price/history (exchange=Binance, symbol=BI-BTC" in msg
    assert f"close={bad!r}" in msg
    assert "2026-03-01T00:00:00+00:00" in msg


def test_split_days_gives_each_day_its_bars_and_empty_days():
    asset = MARKET_ASSETS_BY_NAME["open_interest_ohlc"]
    [request] = plan_requests([asset], ["BTC"], [], fake_pair)
    rows = [
        {"time": T0 + h * HOUR_MS, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0}
        for h in range(30)
    ]
    parts = split_days(
        rows_to_table(asset, [(request, rows)]),
        [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)],
    )
    assert [t.num_rows for t in parts.values()] == [24, 6, 0]
    assert parts[date(2026, 3, 3)].schema == asset.schema


def test_fetch_by_asset_yields_each_asset_complete_and_in_plan_order():
    assets = [MARKET_ASSETS_BY_NAME["price_ohlc"], MARKET_ASSETS_BY_NAME["taker_volume"]]
    requests = plan_requests(assets, ["BTC", "ETH"], ["Binance", "OKX"], fake_pair)

    def history(path: str, params: dict[str, str]) -> list[dict]:
        return [{"time": T0, "tag": params["symbol"]}]

    got = {
        asset.name: [rows[0]["tag"] for _, rows in fetched]
        for asset, fetched in fetch_by_asset(history, requests)
    }
    assert got == {
        "price_ohlc": ["BI-BTC", "OK-BTC", "BI-ETH", "OK-ETH"],
        "taker_volume": ["BTC", "ETH"],
    }


def test_fetch_by_asset_propagates_the_first_failure():
    requests = plan_requests([MARKET_ASSETS_BY_NAME["price_ohlc"]], ["BTC"], ["Binance"], fake_pair)

    def history(path: str, params: dict[str, str]) -> list[dict]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(fetch_by_asset(history, requests))


def test_schema_types():
    ts = MARKET_ASSETS_BY_NAME["price_ohlc"].schema.field("ts").type
    assert ts == pa.timestamp("ms", tz="UTC")
