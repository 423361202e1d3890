from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from cg_assets.coinglass.plans import HOUR_MS
from cg_assets.market.checks import market_checks
from cg_assets.market.series import MARKET_ASSETS_BY_NAME
from cg_assets.resources import LakeResource
from cg_assets.storage import Lake
from cg_assets.tables import CheckOutcome

ASSET = MARKET_ASSETS_BY_NAME["open_interest_ohlc"]
DAY = date(2026, 3, 1)
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)


def day_table(
    hours: range, close: float = 5.0, symbol: str = "BTC", offset_ms: int = 0
) -> pa.Table:
    n = len(hours)
    return pa.table(
        {
            "ts": pa.array(
                [T0 + offset_ms + h * HOUR_MS for h in hours], pa.timestamp("ms", tz="UTC")
            ),
            "symbol": [symbol] * n,
            "open": [1.0] * n,
            "high": [9.0] * n,
            "low": [1.0] * n,
            "close": [close] * n,
        },
        schema=ASSET.schema,
    )


def read_back(
    tmp_path: Path, series: list[tuple[str, ...]], closed: list[date]
) -> list[CheckOutcome]:
    checks = market_checks(ASSET, series, closed, HOUR_MS)
    return LakeResource.at(tmp_path).checks(ASSET.name, [DAY], ASSET.schema, checks)


def outcomes(tmp_path: Path, table: pa.Table, closed: list[date] | None = None) -> dict[str, bool]:
    Lake(tmp_path).write_day(ASSET.name, DAY, table)
    results = read_back(tmp_path, [("BTC",)], [DAY] if closed is None else closed)
    return {o.name: o.passed for o in results}


def test_a_complete_clean_day_passes_everything(tmp_path: Path):
    assert all(outcomes(tmp_path, day_table(range(24))).values())


def test_missing_bar_fails_completeness_only_for_closed_days(tmp_path: Path):
    assert not outcomes(tmp_path, day_table(range(23)))["complete_bars"]
    assert outcomes(tmp_path, day_table(range(23)), closed=[])["complete_bars"]


def test_missing_series_fails_completeness(tmp_path: Path):
    Lake(tmp_path).write_day(ASSET.name, DAY, day_table(range(24)))
    [complete] = [
        o for o in read_back(tmp_path, [("BTC",), ("ETH",)], [DAY]) if o.name == "complete_bars"
    ]
    assert not complete.passed
    assert "2026-03-01 ETH: 0 of 24" in complete.details["incomplete"]


def test_duplicate_key_fails(tmp_path: Path):
    doubled = pa.concat_tables([day_table(range(24)), day_table(range(1))])
    assert not outcomes(tmp_path, doubled)["unique_key"]


@pytest.mark.parametrize("close", [0.0, -1.0, float("nan")])
def test_non_positive_or_nan_oi_fails_ranges(tmp_path: Path, close: float):
    assert not outcomes(tmp_path, day_table(range(24), close=close))["value_ranges"]


def test_bar_outside_its_day_fails(tmp_path: Path):
    assert not outcomes(tmp_path, day_table(range(24), offset_ms=HOUR_MS))["bars_in_partition"]


def test_wrong_type_fails_schema(tmp_path: Path):
    table = day_table(range(24))
    table = table.set_column(2, "open", pa.array([1] * 24, pa.int64()))
    assert not outcomes(tmp_path, table)["schema"]
