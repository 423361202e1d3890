"""A late market refresh, through the real snapshot, signals and digest assets.

The 10:00 bar had a long liquidation cascade and was alerted at 11:07. At 12:07 the refresh of
the 11:00 bar has stored only prices and funding (the funding is extreme, so a signal fires).
The digest must neither repeat 10:00's cascade for 11:00 nor go out without the bar's
liquidations; once the refresh lands at 12:10, the 11:00 bar (its own, smaller cascade) is
alerted, once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest

from cg_assets.definitions import build_resources
from cg_assets.market.series import MARKET_ASSETS_BY_NAME
from cg_assets.settings import Settings
from cg_assets.signals.engine import build_signals_asset
from cg_assets.signals.snapshot import build_snapshot_asset
from cg_assets.sim import TelegramServer
from cg_assets.storage import Lake
from cg_assets.telegram.ledger import AlertLedger
from cg_assets_tests.test_alerts.conftest import (
    BAR,
    Clock,
    ledger_file,
    metadata,
    resource,
    run_alerts,
)

DAY = BAR.date()
EXCHANGES = ("Binance", "OKX")
PARTIAL = ("price_ohlc", "funding_rate_ohlc")  # what the late refresh stored first


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    """The shared settings, with partitions reaching back to DAY."""
    return Settings.from_env({**env, "CG_START_DATE": (DAY - timedelta(days=7)).isoformat()})


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC)


def bar_rows(hour: int, long_liq_usd: float, funding: float) -> dict[str, list[dict]]:
    """One calm BTC bar of every market input, but for its liquidations and funding."""
    ts = at(hour)
    venue = [{"ts": ts, "symbol": "BTC", "exchange": e, "pair": f"BTC-{e}"} for e in EXCHANGES]
    return {
        "funding_rate_ohlc": [{**v, "close": funding} for v in venue],
        "price_ohlc": [{**v, "close": 100.0, "volume_usd": 1e9} for v in venue],
        "long_short_ratio": [
            {**v, "scope": scope, "long_percent": pct, "short_percent": 100 - pct}
            for v in venue
            for scope, pct in (
                ("global_account", 52.0),
                ("top_account", 55.0),
                ("top_position", 54.0),
            )
        ],
        "open_interest_ohlc": [{"ts": ts, "symbol": "BTC", "close": 1e10}],
        "taker_volume": [
            {"ts": ts, "symbol": "BTC", "buy_volume_usd": 5e8, "sell_volume_usd": 5e8}
        ],
        "liquidation_history": [
            {
                "ts": ts,
                "symbol": "BTC",
                "long_liquidation_usd": long_liq_usd,
                "short_liquidation_usd": 1e6,
            }
        ],
    }


def store(lake: Lake, bars: list[dict[str, list[dict]]], only: tuple[str, ...] = ()) -> None:
    """Write the day of each market asset as a refresh would (the whole day, replaced); the
    last bar is stored only for the assets in `only` when given."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for i, bar in enumerate(bars):
        for asset, asset_rows in bar.items():
            if only and i == len(bars) - 1 and asset not in only:
                continue
            rows[asset] += asset_rows
    for asset, asset_rows in rows.items():
        schema = MARKET_ASSETS_BY_NAME[asset].schema
        full = [{f.name: r.get(f.name, r.get("close")) for f in schema} for r in asset_rows]
        lake.write_day(asset, DAY, pa.Table.from_pylist(full, schema=schema))


def evaluate(
    settings: Settings, clock: Clock, telegram: TelegramServer, instance: dg.DagsterInstance
) -> dict:
    """What the schedules do at the clock's time: snapshot and signals of the day, then the
    digest the signals trigger."""
    result = dg.materialize(
        [build_snapshot_asset(settings, clock), build_signals_asset(settings)],
        resources=build_resources(settings),
        instance=instance,
        partition_key=DAY.isoformat(),
    )
    assert result.success
    return metadata(run_alerts(settings, resource(telegram), clock, instance))


def test_a_late_refresh_neither_repeats_the_bar_before_nor_loses_its_own(
    settings, lake, telegram, clock, instance
):
    calm = [bar_rows(h, long_liq_usd=1e6, funding=0.01) for h in range(10)]
    cascade = bar_rows(10, long_liq_usd=80e6, funding=0.01)
    late = bar_rows(11, long_liq_usd=60e6, funding=0.12)

    store(lake, [*calm, cascade])
    clock.now = at(11, 7).timestamp()
    assert evaluate(settings, clock, telegram, instance)["sent"] == 1
    [first] = telegram.messages()
    assert "Long liquidation cascade: $80.0M" in first.plain

    store(lake, [*calm, cascade, late], only=PARTIAL)
    clock.now = at(12, 7).timestamp()
    meta = evaluate(settings, clock, telegram, instance)
    assert (meta["sent"], meta["held"]) == (0, 1)
    assert (
        "held: no liquidation_history, long_short_ratio, open_interest_ohlc, taker_volume bar at"
        " 2026-03-01 11:00 UTC yet" in meta["outcomes"]
    )
    assert len(telegram.messages()) == 1  # 10:00's cascade is not sent again as 11:00's
    ledger = AlertLedger(ledger_file(settings))
    assert ledger.get("digest:BTC:2026-03-01T11:00Z") is None

    store(lake, [*calm, cascade, late])  # the refresh lands at 12:10
    clock.now = at(12, 12).timestamp()
    assert evaluate(settings, clock, telegram, instance)["sent"] == 1
    clock.now = at(12, 37).timestamp()  # signals_recheck
    assert evaluate(settings, clock, telegram, instance)["sent"] == 0

    first, second = telegram.messages()
    assert "1h bar 2026-03-01 11:00 UTC" in second.plain
    assert "Long liquidation cascade: $60.0M" in second.plain
    assert "$80.0M" not in second.plain
    assert "Funding" in second.plain
    assert "Sent without" not in second.plain
    assert ledger.get("digest:BTC:2026-03-01T11:00Z").status == "sent"


def test_a_refresh_that_never_lands_goes_out_at_the_recheck_naming_it(
    settings, lake, telegram, clock, instance
):
    calm = [bar_rows(h, long_liq_usd=1e6, funding=0.01) for h in range(11)]
    store(lake, [*calm, bar_rows(11, long_liq_usd=60e6, funding=0.12)], only=PARTIAL)
    clock.now = at(12, 7).timestamp()
    assert evaluate(settings, clock, telegram, instance)["held"] == 1
    clock.now = at(12, 37).timestamp()
    meta = evaluate(settings, clock, telegram, instance)
    assert (meta["sent"], meta["held"]) == (1, 0)
    [message] = telegram.messages()
    assert "1h bar 2026-03-01 11:00 UTC" in message.plain
    assert (
        "Sent without liquidation_history, long_short_ratio, open_interest_ohlc, taker_volume"
        in message.plain
    )
    assert "Liquidations 1h: longs n/a · shorts n/a" in message.plain
    assert "cascade" not in message.plain
