"""The snapshot SQL against values computed by hand on a small lake written here."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from cg_assets.market.series import MARKET_ASSETS_BY_NAME
from cg_assets.resources import CoinGlassResource
from cg_assets.signals.snapshot import (
    CHECK_SQL,
    FIELDS_BY_INPUT,
    FUNDING_LIST_PATH,
    SCHEMA,
    SnapshotConfig,
    SnapshotQuery,
    compute_snapshot,
    funding_intervals,
    hour_bars,
    lookback_days,
)
from cg_assets.sim import SimulatorServer
from cg_assets.storage import Lake
from cg_assets.storage.checks import run_checks

DAY = date(2026, 3, 2)
D0 = datetime(2026, 3, 2, tzinfo=UTC)
HOUR_MS = 3_600_000


def at(hours: float) -> datetime:
    return D0 + timedelta(hours=hours)


def write(lake: Lake, asset: str, rows: list[dict]) -> None:
    """Rows into their UTC days, typed by the market asset's own schema."""
    schema = MARKET_ASSETS_BY_NAME[asset].schema
    by_day: dict[date, list[dict]] = defaultdict(list)
    for row in rows:
        full = {f.name: row.get(f.name, row.get("close")) for f in schema}
        by_day[row["ts"].date()].append(full)
    for day, day_rows in by_day.items():
        lake.write_day(asset, day, pa.Table.from_pylist(day_rows, schema=schema))


def pair(ts: datetime, exchange: str, **values: float) -> dict:
    return {"ts": ts, "symbol": "BTC", "exchange": exchange, "pair": f"BTC-{exchange}", **values}


def coin(ts: datetime, **values: float) -> dict:
    return {"ts": ts, "symbol": "BTC", **values}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path)
    write(
        lake,
        "funding_rate_ohlc",
        [pair(at(h), "Binance", close=c) for h, c in [(0, 0.01), (1, 0.01), (2, 0.01)]]
        + [pair(at(h), "Binance", close=0.03) for h in (3, 4)]
        + [pair(at(h), "Hyper", close=c) for h, c in [(0, 0.0025), (1, 0.0025), (2, 0.005)]]
        + [pair(at(4), "Hyper", close=0.005)],
    )
    write(
        lake,
        "open_interest_ohlc",
        [
            coin(at(h), close=c)
            for h, c in [(-24, 150), (-23, 210), (-1, 200), (0, 210), (1, 189), (3, 199.5)]
        ]
        + [coin(at(4), close=209.475)],
    )
    write(
        lake,
        "liquidation_history",
        [
            coin(at(0), long_liquidation_usd=3e6, short_liquidation_usd=1e6),
            coin(at(1), long_liquidation_usd=0.0, short_liquidation_usd=0.0),
            coin(at(4), long_liquidation_usd=7e6, short_liquidation_usd=2e6),
        ],
    )
    write(
        lake,
        "taker_volume",
        [
            coin(at(0), buy_volume_usd=60.0, sell_volume_usd=40.0),
            coin(at(1), buy_volume_usd=0.0, sell_volume_usd=0.0),
            coin(at(2), buy_volume_usd=30.0, sell_volume_usd=70.0),
        ],
    )
    write(
        lake,
        "long_short_ratio",
        [
            pair(at(h), ex, scope=scope, long_percent=p, short_percent=100 - p, long_short_ratio=1)
            for h in range(5)
            for ex, scope, p in [
                ("Binance", "global_account", 60.0),
                ("Binance", "top_account", 70.0),
                ("Hyper", "global_account", 50.0),
                ("Hyper", "top_account", 40.0),
            ]
        ],
    )
    write(
        lake,
        "price_ohlc",
        [
            pair(at(h), "Binance", close=c, volume_usd=1.0)
            for h, c in [
                (-1, 100.0),
                (0, 101.0),
                (1, 102.01),
                (2, 100.99),
                (3, 100.99),
                (4, 100.99),
            ]
        ]
        + [pair(at(h), "Hyper", close=c, volume_usd=1.0) for h, c in [(0, 200.0), (1, 204.0)]]
        + [pair(at(h), "Hyper", close=204.0, volume_usd=1.0) for h in (2, 3, 4)],
    )
    return lake


def run(lake: Lake, hours: dict[tuple[str, str], float] | None = None) -> dict[datetime, dict]:
    query = SnapshotQuery(("BTC", "ETH"), ("Binance", "Hyper"), HOUR_MS, at(0), at(8))
    intervals = hours if hours is not None else {("BTC", "Binance"): 8.0, ("BTC", "Hyper"): 1.0}
    table = compute_snapshot(duckdb.connect(), lake, query, intervals)
    assert table.schema == SCHEMA
    rows = table.to_pylist()
    assert {r["symbol"] for r in rows} == {"BTC"}  # ETH has no input at all: no rows
    return {r["ts"]: {**r, "missing": json.loads(r["missing"])} for r in rows}


def test_a_row_per_bar_with_any_input_and_the_absent_inputs_named(lake: Lake):
    rows = run(lake)
    assert sorted(rows) == [at(h) for h in range(5)]  # inputs end at 04:00: no row after it
    assert {h: rows[at(h)]["absent_inputs"] for h in range(5)} == {
        0: [],
        1: [],
        2: ["liquidation_history", "open_interest_ohlc"],
        3: ["liquidation_history", "taker_volume"],
        4: ["taker_volume"],
    }


def test_nothing_is_carried_forward_from_an_earlier_bar(lake: Lake):
    """Each gap in the fixture has a value one or two bars earlier that must not fill it."""
    rows = run(lake)
    assert rows[at(2)]["oi_usd"] is None  # 01:00 had 189
    assert rows[at(2)]["missing"]["oi_usd"] == "no open_interest_ohlc bar at 2026-03-02T02:00Z"
    assert (rows[at(3)]["long_liq_usd"], rows[at(3)]["short_liq_usd"]) == (None, None)  # 01:00: 0
    assert rows[at(3)]["missing"]["long_liq_usd"] == (
        "no liquidation_history bar at 2026-03-02T03:00Z"
    )
    assert rows[at(4)]["taker_buy_share_pct"] is None  # 02:00 had 30%
    assert rows[at(4)]["missing"]["taker_buy_share_pct"] == (
        "no taker_volume bar at 2026-03-02T04:00Z"
    )
    for row in rows.values():
        for name in row["absent_inputs"]:
            for field in FIELDS_BY_INPUT[name]:
                assert row[field] is None, (row["ts"], field)
                assert row["missing"][field].startswith(f"no {name} bar at "), (row["ts"], field)


def test_funding_is_scaled_to_8h_and_averaged(lake: Lake):
    rows = run(lake)
    # Binance pays every 8 h (x1), Hyper every hour (x8).
    expected = {
        0: (0.01 + 0.0025 * 8) / 2,
        1: (0.01 + 0.0025 * 8) / 2,
        2: (0.01 + 0.005 * 8) / 2,
        3: 0.03,  # Hyper has no 03:00 bar: the exchanges that reported it
        4: (0.03 + 0.005 * 8) / 2,
    }
    for h, value in expected.items():
        assert rows[at(h)]["funding_avg_8h_pct"] == pytest.approx(value), h


def test_unknown_funding_interval_excludes_the_exchange(lake: Lake):
    rows = run(lake, {("BTC", "Binance"): 8.0})
    assert rows[at(4)]["funding_avg_8h_pct"] == pytest.approx(0.03)
    rows = run(lake, {})
    assert rows[at(0)]["funding_avg_8h_pct"] is None
    assert rows[at(0)]["missing"]["funding_avg_8h_pct"] == (
        "no funding_rate_ohlc bar at 2026-03-02T00:00Z from an exchange with a known funding"
        " interval"
    )
    assert rows[at(0)]["absent_inputs"] == []  # the bars are there, their interval is not


def test_open_interest_and_its_changes(lake: Lake):
    rows = run(lake)
    assert rows[at(0)]["oi_usd"] == 210
    assert rows[at(0)]["oi_change_1_pct"] == pytest.approx(5.0)
    assert rows[at(0)]["oi_change_24_pct"] == pytest.approx(40.0)
    assert rows[at(1)]["oi_change_1_pct"] == pytest.approx(-10.0)
    assert rows[at(1)]["oi_change_24_pct"] == pytest.approx(-10.0)
    three = rows[at(3)]
    assert three["oi_usd"] == 199.5
    assert three["oi_change_1_pct"] is None
    assert three["missing"]["oi_change_1_pct"] == (
        "no open_interest_ohlc bar at 2026-03-02T02:00Z to compare with"
    )
    assert three["missing"]["oi_change_24_pct"] == (
        "no open_interest_ohlc bar at 2026-03-01T03:00Z to compare with"
    )
    assert rows[at(4)]["oi_change_1_pct"] == pytest.approx(5.0)


def test_liquidations_and_taker_share(lake: Lake):
    rows = run(lake)
    assert (rows[at(0)]["long_liq_usd"], rows[at(0)]["short_liq_usd"]) == (3e6, 1e6)
    assert (rows[at(1)]["long_liq_usd"], rows[at(1)]["short_liq_usd"]) == (0.0, 0.0)
    assert rows[at(4)]["long_liq_usd"] == 7e6
    assert rows[at(0)]["taker_buy_share_pct"] == pytest.approx(60.0)
    assert rows[at(1)]["taker_buy_share_pct"] is None
    assert rows[at(1)]["missing"]["taker_buy_share_pct"] == (
        "no taker volume in the hour (buy + sell = 0)"
    )
    assert rows[at(2)]["taker_buy_share_pct"] == pytest.approx(30.0)


def test_positioning_is_averaged_and_a_missing_scope_is_explained(lake: Lake):
    rows = run(lake)
    row = rows[at(0)]
    assert row["retail_long_pct"] == pytest.approx(55.0)
    assert row["top_account_long_pct"] == pytest.approx(55.0)
    assert row["top_position_long_pct"] is None
    assert row["missing"] == {
        "top_position_long_pct": "no long_short_ratio top_position bar at 2026-03-02T00:00Z"
    }
    assert row["absent_inputs"] == []  # the input is there, one of its scopes is not


def test_price_and_its_change(lake: Lake):
    rows = run(lake)
    assert rows[at(0)]["price"] == pytest.approx((101 + 200) / 2)
    assert rows[at(0)]["price_change_pct"] == pytest.approx(1.0)  # Hyper has no previous bar
    assert rows[at(1)]["price"] == pytest.approx((102.01 + 204) / 2)
    assert rows[at(1)]["price_change_pct"] == pytest.approx((1.0 + 2.0) / 2)
    assert rows[at(2)]["price_change_pct"] == pytest.approx((100.99 / 102.01 - 1) * 100 / 2)


def test_every_null_has_a_reason_and_only_nulls_do(lake: Lake):
    for row in run(lake).values():
        nulls = {k for k, v in row.items() if v is None}
        assert nulls == set(row["missing"]), row["ts"]


def test_sub_hour_interval_sums_the_hour(tmp_path: Path):
    lake = Lake(tmp_path)
    quarter = 15 * 60_000
    write(
        lake,
        "liquidation_history",
        [
            coin(at(m / 60), long_liquidation_usd=1e6, short_liquidation_usd=2e6)
            for m in (0, 15, 30, 45, 60)
        ],
    )
    write(
        lake,
        "open_interest_ohlc",
        [coin(at(m / 60), close=c) for m, c in [(0, 100.0), (15, 101), (30, 101), (45, 101)]]
        + [coin(at(1), close=110.0)],
    )
    query = SnapshotQuery(("BTC",), ("Binance",), quarter, at(0), at(1.25))
    rows = {r["ts"]: r for r in compute_snapshot(duckdb.connect(), lake, query, {}).to_pylist()}
    assert hour_bars(quarter) == 4
    assert rows[at(0.5)]["long_liq_usd"] is None
    assert json.loads(rows[at(0.5)]["missing"])["long_liq_usd"] == (
        "liquidation_history has 3 of the 4 bars of the hour"
    )
    assert rows[at(0.75)]["long_liq_usd"] == 4e6
    assert rows[at(1)]["short_liq_usd"] == 8e6
    assert rows[at(1)]["oi_change_1_pct"] == pytest.approx(10.0)  # against 00:00, four bars back


def test_lookback_covers_24_bars():
    assert lookback_days(HOUR_MS) == 2
    assert lookback_days(4 * HOUR_MS) == 5
    assert lookback_days(15 * 60_000) == 1


def test_funding_intervals_from_the_simulator(sim: SimulatorServer):
    listing = CoinGlassResource(base_url=sim.base_url, plan="professional").client.get(
        FUNDING_LIST_PATH, {}
    )
    hours = funding_intervals(listing, ["BTC", "ETH"], ["Binance", "Hyperliquid", "Nowhere"], {})
    assert hours == {
        ("BTC", "Binance"): 8.0,
        ("BTC", "Hyperliquid"): 1.0,
        ("ETH", "Binance"): 8.0,
        ("ETH", "Hyperliquid"): 1.0,
    }
    overridden = funding_intervals(listing, ["BTC"], ["Binance", "Nowhere"], {"Nowhere": 4.0})
    assert overridden == {("BTC", "Binance"): 8.0, ("BTC", "Nowhere"): 4.0}


def test_funding_intervals_skip_unusable_entries():
    listing = [
        {
            "symbol": "BTC",
            "stablecoin_margin_list": [
                {"exchange": "A", "funding_rate_interval": "4"},
                {"exchange": "B", "funding_rate_interval": None},
                {"exchange": "C", "funding_rate_interval": 0},
                {"exchange": "D"},
            ],
            "token_margin_list": [{"exchange": "E", "funding_rate_interval": 8}],
        }
    ]
    assert funding_intervals(listing, ["BTC"], ["A", "B", "C", "D", "E"], {}) == {("BTC", "A"): 4.0}


def test_interval_overrides_must_be_positive():
    assert SnapshotConfig(funding_interval_hours={"Hyperliquid": 1}).funding_interval_hours == {
        "Hyperliquid": 1.0
    }
    with pytest.raises(ValueError, match=r"funding_interval_hours=\{'OKX': 0\.0\}"):
        SnapshotConfig(funding_interval_hours={"OKX": 0})


def test_nulls_explained_fails_on_a_value_for_an_absent_input(lake: Lake, tmp_path: Path):
    """The check catches a field filled although its input has no bar (say, carried forward)
    even when `missing` was made to agree with it."""
    table = compute_snapshot(
        duckdb.connect(),
        lake,
        SnapshotQuery(("BTC",), ("Binance", "Hyper"), HOUR_MS, at(0), at(5)),
        {("BTC", "Binance"): 8.0, ("BTC", "Hyper"): 1.0},
    )
    out = Lake(tmp_path / "out")
    out.write_day("market_snapshot", DAY, table)

    def nulls_explained() -> bool:
        with duckdb.connect() as con:
            outcomes = run_checks(con, out, "market_snapshot", [DAY], SCHEMA, CHECK_SQL)
        return {o.name: o.passed for o in outcomes}["nulls_explained"]

    assert nulls_explained()
    rows = table.to_pylist()
    three = next(r for r in rows if r["ts"] == at(3))
    assert "liquidation_history" in three["absent_inputs"]
    three["long_liq_usd"] = 0.0  # the 01:00 value, as if carried forward
    three["missing"] = json.dumps(
        {k: v for k, v in json.loads(three["missing"]).items() if k != "long_liq_usd"}
    )
    out.write_day("market_snapshot", DAY, pa.Table.from_pylist(rows, schema=SCHEMA))
    assert not nulls_explained()
