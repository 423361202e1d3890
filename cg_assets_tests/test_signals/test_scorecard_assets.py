"""signal_outcomes and signal_scorecard as Dagster assets over a real lake (Parquet, DuckDB):
the forward window is read across the partition's next day, pending outcomes are null, the
read-back checks pass, and the alerts find the newest scorecard through the lake."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from cg_assets.alerts.assets import read_records
from cg_assets.definitions import build_resources
from cg_assets.settings import Settings
from cg_assets.signals.engine import SCHEMA as SIGNALS_SCHEMA
from cg_assets.signals.outcomes import PRICE, build_outcomes_asset
from cg_assets.signals.rules import signal_id
from cg_assets.signals.scorecard import build_scorecard_asset
from cg_assets.storage import Lake

DAY = date(2026, 3, 1)
NEXT = DAY + timedelta(days=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "CG_DATA_DIR": str(tmp_path / "data"),
            "CG_SYMBOLS": "BTC",
            "CG_EXCHANGES": "Binance,OKX",
            "CG_INTERVAL": "1h",
            "CG_START_DATE": "2026-02-01",
        }
    )


def write_prices(lake: Lake, days: list[date]) -> None:
    """Hourly bars rising 0.1 % a bar; OKX quotes 2 USD above Binance."""
    for day in days:
        start = datetime.combine(day, datetime.min.time(), UTC)
        rows = []
        for h in range(24):
            ts = start + timedelta(hours=h)
            k = (ts - datetime.combine(DAY, datetime.min.time(), UTC)) / timedelta(hours=1)
            price = 1000.0 * 1.001**k
            for exchange, shift in (("Binance", 0.0), ("OKX", 2.0)):
                rows.append(
                    {
                        "ts": ts,
                        "symbol": "BTC",
                        "exchange": exchange,
                        "pair": "BTCUSDT",
                        "open": price + shift,
                        "high": price * 1.001 + shift,
                        "low": price * 0.999 + shift,
                        "close": price * 1.001 + shift,
                        "volume_usd": 1e6,
                    }
                )
        lake.write_day(PRICE.name, day, pa.Table.from_pylist(rows, schema=PRICE.schema))


def write_signals(lake: Lake, hours: list[int]) -> None:
    start = datetime.combine(DAY, datetime.min.time(), UTC)
    rows = [
        {
            "ts": start + timedelta(hours=h),
            "symbol": "BTC",
            "rule": "funding",
            "level": "HIGH",
            "title": "Funding +0.1200% per 8h",
            "evidence": json.dumps({"funding_avg_8h_pct": 0.12}),
            "signal_id": signal_id(start + timedelta(hours=h), "BTC", "funding"),
        }
        for h in hours
    ]
    lake.write_day("signals", DAY, pa.Table.from_pylist(rows, schema=SIGNALS_SCHEMA))


def materialize(settings: Settings, asset: dg.AssetsDefinition, **kwargs) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset], resources=build_resources(settings), instance=instance, **kwargs
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks
    assert all(c.passed for c in checks), [c.description for c in checks]


def test_outcomes_follow_the_forward_window_into_the_next_day(settings: Settings):
    lake = Lake(settings.data_dir)
    write_prices(lake, [DAY])  # the next day has not landed yet
    write_signals(lake, [0, 10, 22])
    outcomes = build_outcomes_asset(settings)
    materialize(settings, outcomes, partition_key=DAY.isoformat())
    rows = {
        (r["ts"].hour, r["horizon"]): r
        for r in lake.read_days("signal_outcomes", [DAY]).to_pylist()
    }
    assert len(rows) == 9
    first = rows[(0, "1h")]
    # Signal on the 00:00 bar: entry at the 01:00 open (mean of both exchanges), exit at the
    # close of the 01:00 bar.
    assert first["status"] == "done"
    assert first["entry_ts"] == datetime(2026, 3, 1, 1, tzinfo=UTC)
    assert first["entry_price"] == pytest.approx(1000 * 1.001 + 1.0)
    assert first["ret_pct"] == pytest.approx(((1001 * 1.001 + 1) / (1001 + 1) - 1) * 100)
    assert first["signed_pct"] == pytest.approx(-first["ret_pct"])  # funding > 0: predicts down
    for key in ((10, "24h"), (22, "4h"), (22, "24h")):
        assert rows[key]["status"] == "pending"
        assert rows[key]["ret_pct"] is None
        assert rows[key]["signed_pct"] is None
    # The next day lands: re-running the day completes what its bars cover.
    write_prices(lake, [NEXT])
    materialize(settings, outcomes, partition_key=DAY.isoformat())
    rows = {
        (r["ts"].hour, r["horizon"]): r
        for r in lake.read_days("signal_outcomes", [DAY]).to_pylist()
    }
    assert all(r["status"] == "done" for r in rows.values())
    assert rows[(22, "24h")]["exit_ts"] == datetime(2026, 3, 2, 23, tzinfo=UTC)


def test_outcomes_declare_the_forward_window_as_lineage(settings: Settings):
    asset = build_outcomes_asset(settings)
    mapping = asset.get_partition_mapping(dg.AssetKey(PRICE.name))
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    assert (mapping.start_offset, mapping.end_offset) == (0, 1)


def test_scorecard_is_published_checked_and_read_by_the_alerts(settings: Settings):
    lake = Lake(settings.data_dir)
    days = [DAY + timedelta(days=i) for i in range(4)]
    write_prices(lake, days)
    write_signals(lake, list(range(0, 24, 1)))
    materialize(settings, build_outcomes_asset(settings), partition_key=DAY.isoformat())
    materialize(settings, build_scorecard_asset(settings))
    [day] = lake.days("signal_scorecard")
    rows = lake.read_days("signal_scorecard", [day]).to_pylist()
    assert {(r["rule"], r["level"], r["side"], r["horizon"]) for r in rows} == {
        ("funding", "HIGH", "down", h) for h in ("1h", "4h", "24h")
    }
    one_hour = next(r for r in rows if r["horizon"] == "1h")
    # 24 hourly signals, the HIGH cooldown (30 min) holds none of them back.
    assert (one_hour["fired"], one_hour["received"], one_hour["n"]) == (24, 24, 24)
    # Price rose every bar: the "down" call missed every time, the baseline hit rate is 0 too.
    assert one_hour["hit_rate"] == 0.0
    assert one_hour["baseline_hit_rate"] == 0.0
    assert np.isfinite(one_hour["q_value"])
    records = read_records(lake)
    assert records[("funding", "HIGH", "BTC", "down")]["horizon"] == "4h"
