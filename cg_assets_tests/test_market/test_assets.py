"""Market assets end to end: real HTTP to the in-process simulator, real Parquet and DuckDB."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pytest
import requests

from cg_assets.coinglass.plans import DAY_MS
from cg_assets.definitions import build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.market.fetch import plan_requests
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.resources import CoinGlassResource
from cg_assets.settings import Settings
from cg_assets.sim import SimulatorServer
from cg_assets.storage import Catalog, Lake

HISTORY_PATHS = {e.path for a in MARKET_ASSETS for e in a.endpoints}


def materialize(
    settings: Settings,
    instance: dg.DagsterInstance,
    first: str,
    last: str | None = None,
    selection: list[str] | None = None,
    max_attempts: int = 6,
) -> dg.ExecuteInProcessResult:
    tags = {}
    kwargs: dict = {"partition_key": first}
    if last is not None:
        tags = {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        }
        kwargs = {"tags": tags}
    return dg.materialize(
        [build_market_assets(settings)],
        resources={
            **build_resources(settings),
            "coinglass": CoinGlassResource(
                base_url=settings.api_base_url, plan=settings.plan.value, max_attempts=max_attempts
            ),
        },
        instance=instance,
        selection=selection,
        raise_on_error=False,
        **kwargs,
    )


def raw_bars(
    sim: SimulatorServer, path: str, params: dict[str, str], start_ms: int, end_ms: int
) -> list[dict]:
    """What the simulator serves, fetched without our client (the oracle)."""
    body = requests.get(
        sim.base_url + path,
        params={
            **params,
            "interval": "1h",
            "start_time": start_ms,
            "end_time": end_ms,
            "limit": 1000,
        },
        timeout=10,
    ).json()
    assert body["code"] == "0", body
    return body["data"]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)


def test_partition_holds_exactly_the_bars_the_simulator_served(settings, sim, instance):
    day = (datetime.now(UTC) - timedelta(days=3)).date()
    result = materialize(settings, instance, day.isoformat())
    assert result.success
    lake = Lake(settings.data_dir)
    start, end = day_start_ms(day), day_start_ms(day) + DAY_MS
    resolved = {}
    for asset in MARKET_ASSETS:
        stored = lake.read_days(asset.name, [day])
        assert stored is not None
        assert stored.num_rows > 0
        rows = {(*(str(r[c]) for c in asset.series_key), r["ts"]): r for r in stored.to_pylist()}

        def pair(coin: str, exchange: str) -> str:
            return resolved.setdefault((coin, exchange), stored_pair(lake, coin, exchange, day))

        expected = 0
        for request in plan_requests([asset], settings.symbols, settings.exchanges, pair):
            for bar in raw_bars(sim, request.endpoint.path, request.params, start, end):
                ident = tuple(str(request.constants[c]) for c in asset.series_key)
                row = rows[(*ident, datetime.fromtimestamp(bar["time"] / 1000, UTC))]
                for field, column in request.endpoint.fields.items():
                    assert row[column] == pytest.approx(float(bar[field]), rel=1e-12), (
                        asset.name,
                        field,
                    )
                expected += 1
        assert (
            expected
            == stored.num_rows
            == 24 * len(plan_requests([asset], settings.symbols, settings.exchanges, pair))
        )


def stored_pair(lake: Lake, coin: str, exchange: str, day: date) -> str:
    table = lake.read_days("price_ohlc", [day]).to_pylist()
    return next(r["pair"] for r in table if r["symbol"] == coin and r["exchange"] == exchange)


def test_pairs_are_the_exchanges_own_instrument_ids(settings, instance):
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    assert materialize(settings, instance, day.isoformat(), selection=["price_ohlc"]).success
    rows = Lake(settings.data_dir).read_days("price_ohlc", [day]).to_pylist()
    pairs = {(r["symbol"], r["exchange"]): r["pair"] for r in rows}
    assert pairs == {
        ("BTC", "Binance"): "BTCUSDT",
        ("ETH", "Binance"): "ETHUSDT",
        ("BTC", "OKX"): "BTC-USDT-SWAP",
        ("ETH", "OKX"): "ETH-USDT-SWAP",
    }


def test_checks_pass_and_metadata_describes_the_data(settings, instance):
    day = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    result = materialize(settings, instance, day)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(MARKET_ASSETS) * 5
    assert [c.check_name for c in checks if not c.passed] == []
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    meta = mats["long_short_ratio"].materialization.metadata
    assert meta["dagster/row_count"].value == 2 * 2 * 3 * 24
    assert meta["series"].value == 12
    assert meta["http_requests"].value == 12
    assert len(meta["preview"].value.records) == 8
    assert meta["first_ts"].value == day_start_ms(date.fromisoformat(day)) / 1000


def test_views_in_the_catalog_match_the_lake(settings, instance):
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    assert materialize(settings, instance, day.isoformat()).success
    con = duckdb.connect(str(Catalog(Lake(settings.data_dir)).path), read_only=True)
    try:
        for asset in MARKET_ASSETS:
            query = f"SELECT count(*) FROM {asset.name} WHERE date = $d"
            [(n,)] = con.execute(query, {"d": day}).fetchall()
            assert n == Lake(settings.data_dir).read_days(asset.name, [day]).num_rows > 0
    finally:
        con.close()


def test_rematerializing_replaces_the_day(settings, instance):
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    for _ in range(2):
        assert materialize(settings, instance, day.isoformat(), selection=["taker_volume"]).success
    table = Lake(settings.data_dir).read_days("taker_volume", [day])
    assert table.num_rows == 2 * 24


def test_thirty_day_backfill_is_one_run_with_minimum_requests(env, sim, instance):
    settings = Settings.from_env({**env, "CG_INTERVAL": "15m"})
    first = (datetime.now(UTC) - timedelta(days=31)).date()
    last = first + timedelta(days=29)
    sim.reset_stats()
    result = materialize(settings, instance, first.isoformat(), last.isoformat())
    assert result.success
    series = len(
        plan_requests(MARKET_ASSETS, settings.symbols, settings.exchanges, lambda c, e: c + e)
    )
    history_calls = sum(n for p, n in sim.stats.by_path.items() if p in HISTORY_PATHS)
    assert history_calls == series * 3  # 30 days x 96 bars = 2880 bars -> 3 pages per series
    assert sim.stats.rate_limited == 0
    assert len(instance.get_run_records()) == 1
    lake = Lake(settings.data_dir)
    days = [first + timedelta(days=i) for i in range(30)]
    oi = lake.read_days("open_interest_ohlc", days)
    assert oi.num_rows == 2 * 30 * 96
    assert [c.check_name for c in result.get_asset_check_evaluations() if not c.passed] == []


def test_partition_older_than_plan_history_fails_with_the_reason(env, instance):
    settings = Settings.from_env({**env, "CG_INTERVAL": "1m", "CG_START_DATE": "2026-01-01"})
    old = (datetime.now(UTC) - timedelta(days=20)).date().isoformat()
    result = materialize(settings, instance, old, selection=["price_ohlc"])
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.error.to_string()
    assert "Professional plan's 12-day history at interval 1m" in text
    assert Lake(settings.data_dir).days("price_ohlc") == []


def test_bad_payload_fails_the_run_and_keeps_stored_days(settings, sim, instance):
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    assert materialize(
        settings, instance, day.isoformat(), selection=["open_interest_ohlc"]
    ).success
    before = Lake(settings.data_dir).read_days("open_interest_ohlc", [day])
    sim.faults.malformed_json_rate = 1.0
    result = materialize(
        settings, instance, day.isoformat(), selection=["open_interest_ohlc"], max_attempts=2
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.error.to_string()
    assert "/api/futures/open-interest/aggregated-history" in text
    assert "malformed JSON" in text
    assert Lake(settings.data_dir).read_days("open_interest_ohlc", [day]).equals(before)
