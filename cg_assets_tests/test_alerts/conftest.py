"""Alert fixtures: the Telegram stand-in, a settable clock, and minimal `market_snapshot` and
`signals` days written to the lake in the shape docs/contracts give them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from cg_assets.alerts.assets import ASSET, build_alert_assets
from cg_assets.resources import LakeResource
from cg_assets.resources.telegram import TelegramResource
from cg_assets.settings import Settings
from cg_assets.sim import TelegramServer
from cg_assets.storage import Lake
from cg_assets.telegram.ledger import ledger_path

TOKEN = "777000111:standin-test-token"
CHAT = 5550001
START = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)  # an evaluation five minutes into a bar
BAR = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)  # the bar it evaluates

_TS = pa.timestamp("ms", tz="UTC")
SNAPSHOT_SCHEMA = pa.schema(
    [
        ("ts", _TS),
        ("symbol", pa.string()),
        ("funding_avg_8h_pct", pa.float64()),
        ("oi_usd", pa.float64()),
        ("oi_change_1_pct", pa.float64()),
        ("oi_change_24_pct", pa.float64()),
        ("long_liq_usd", pa.float64()),
        ("short_liq_usd", pa.float64()),
        ("retail_long_pct", pa.float64()),
        ("top_account_long_pct", pa.float64()),
        ("top_position_long_pct", pa.float64()),
        ("taker_buy_share_pct", pa.float64()),
        ("price", pa.float64()),
        ("price_change_pct", pa.float64()),
        ("absent_inputs", pa.list_(pa.string())),
        ("missing", pa.string()),
    ]
)
SIGNALS_SCHEMA = pa.schema(
    [
        ("ts", _TS),
        ("symbol", pa.string()),
        ("rule", pa.string()),
        ("level", pa.string()),
        ("title", pa.string()),
        ("evidence", pa.string()),
        ("signal_id", pa.string()),
    ]
)


class Clock:
    """Epoch seconds that only move when a test moves them."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


def snapshot_row(coin: str, ts: datetime, **values: object) -> dict:
    row = {
        "ts": ts,
        "symbol": coin,
        "funding_avg_8h_pct": 0.12,
        "oi_usd": 12.3e9,
        "oi_change_1_pct": 5.4,
        "oi_change_24_pct": -2.1,
        "long_liq_usd": 52.1e6,
        "short_liq_usd": 3.2e6,
        "retail_long_pct": 68.2,
        "top_account_long_pct": 55.0,
        "top_position_long_pct": None,
        "taker_buy_share_pct": 67.0,
        "price": 93_405.2,
        "price_change_pct": 1.2,
        "absent_inputs": [],
        "missing": json.dumps({"top_position_long_pct": "no Bybit bar"}),
    }
    row.update(values)
    return row


def write_bar(
    lake: Lake,
    ts: datetime,
    signals: dict[str, Sequence[tuple[str, ...]]],
    **snapshot_values: object,
) -> None:
    """Add one evaluated bar: a snapshot row per coin in `signals` and its (rule, level, title)
    or (rule, level, title, evidence as JSON) signals, filed in the bar's day like the signal
    assets' daily partitions hold them. Rows of the same coins and bar already there are
    replaced, as re-running the assets would."""
    snaps = [snapshot_row(coin, ts, **snapshot_values) for coin in signals]
    replaced = {(ts, coin) for coin in signals}
    rows = [
        {
            "ts": ts,
            "symbol": coin,
            "rule": rule,
            "level": level,
            "title": title,
            "evidence": evidence[0] if evidence else "{}",
            "signal_id": f"{coin}-{rule}-{ts:%Y%m%d%H}",
        }
        for coin, fired in signals.items()
        for rule, level, title, *evidence in fired
    ]
    for asset, new, schema in (
        ("market_snapshot", snaps, SNAPSHOT_SCHEMA),
        ("signals", rows, SIGNALS_SCHEMA),
    ):
        old = lake.read_days(asset, [ts.date()])
        table = pa.Table.from_pylist(new, schema=schema)
        if old is not None:  # read back with the partition's `date` column: drop it
            kept = [r for r in old.to_pylist() if (r["ts"], r["symbol"]) not in replaced]
            table = pa.concat_tables([pa.Table.from_pylist(kept, schema=schema), table])
        lake.write_day(asset, ts.date(), table)


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer(tokens=[TOKEN], chats=[CHAT]) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def lake(settings: Settings) -> Lake:
    return Lake(settings.data_dir)


def resource(server: TelegramServer, **config: object) -> TelegramResource:
    options: dict = {"bot_token": TOKEN, "chat_id": str(CHAT), "base_url": server.base_url}
    return TelegramResource(**{**options, "max_wait_s": 5.0, **config})


def run_alerts(
    settings: Settings,
    telegram: TelegramResource,
    clock: Clock,
    instance: dg.DagsterInstance,
    **config: float,
) -> dg.ExecuteInProcessResult:
    """One run of `telegram_alerts`; `config` overrides its DigestConfig (retries a tenth of a
    second apart by default, so a test never waits the production 15 s)."""
    return dg.materialize(
        [build_alert_assets(settings, clock)],
        resources={"telegram": telegram, "lake": LakeResource.at(settings.data_dir)},
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {ASSET: {"config": {"retry_wait_s": 0.1, **config}}}},
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as temp:
        yield temp


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def ledger_file(settings: Settings) -> Path:
    return settings.data_dir / "alerts" / "ledger.sqlite3"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the ledger lives: every test taking it runs on both backends (PostgreSQL: a real
    server, see postgres_harness)."""
    if request.param == "sqlite":
        return str(ledger_path(tmp_path / "data"))
    return request.getfixturevalue("postgres_dsn")
