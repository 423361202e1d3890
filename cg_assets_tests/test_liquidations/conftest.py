"""Spool segments written by hand in the contract's format (docs/CONTRACTS.md), so the Dagster
side is tested against the format itself, not against whatever the writer happens to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cg_assets.settings import Settings


def day_ms(days_ago: int, hour: int = 12) -> int:
    day = (datetime.now(UTC) - timedelta(days=days_ago)).date()
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp() * 1000)


def ws_event(
    t: int, i: int, coin: str = "BTC", exchange: str = "Binance", pair: str = "BTCUSDT"
) -> dict:
    return {
        "kind": "event",
        "event_id": f"e{t}-{i}",
        "exchange": exchange,
        "pair": pair,
        "symbol": coin,
        "side": "long" if i % 2 else "short",
        "price": 90_000.0 + i,
        "usd_value": 1_000.0 + i,
        "time": t,
        "received_at": t + 150,
        "conn_id": "c1",
        "source": "ws",
        "raw": {},
    }


def gap(start: int, end: int) -> dict:
    return {"kind": "gap", "start": start, "end": end, "reason": "test", "conn_id": "c1"}


def write_segment(spool: Path, seq: int, records: list[dict]) -> Path:
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"seg-{seq:012d}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def spool(settings: Settings) -> Path:
    return settings.data_dir / "spool"
