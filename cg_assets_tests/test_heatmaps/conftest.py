"""Lake inputs written by hand, so heatmap results can be checked against numbers worked out
here rather than against whatever the code happens to produce."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from cg_assets.liquidations.orders import SCHEMA as ORDERS_SCHEMA
from cg_assets.market.series import MARKET_ASSETS_BY_NAME

HOUR = 3_600_000
MINUTE = 60_000

# (ts ms, symbol, side, price, usd_value)
Order = tuple[int, str, str, float, float]
# (bar start ms, symbol, exchange, close) or with (..., high, low) appended
Bar = tuple


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def recent_day(days_ago: int = 3) -> date:
    return (datetime.now(UTC) - timedelta(days=days_ago)).date()


def orders_table(orders: Sequence[Order]) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([o[0] for o in orders], pa.timestamp("ms", tz="UTC")),
            "symbol": [o[1] for o in orders],
            "exchange": ["Binance"] * len(orders),
            "pair": [f"{o[1]}USDT" for o in orders],
            "side": [o[2] for o in orders],
            "price": pa.array([float(o[3]) for o in orders], pa.float64()),
            "usd_value": pa.array([float(o[4]) for o in orders], pa.float64()),
            "source": ["ws"] * len(orders),
            "event_id": [f"e{i}" for i in range(len(orders))],
        },
        schema=ORDERS_SCHEMA,
    )


def prices_table(bars: Sequence[Bar]) -> pa.Table:
    """price_ohlc rows; a bar without explicit high/low spans its close +-0.1%."""
    closes = [float(b[3]) for b in bars]
    highs = [float(b[4]) if len(b) > 4 else c * 1.001 for b, c in zip(bars, closes, strict=True)]
    lows = [float(b[5]) if len(b) > 5 else c * 0.999 for b, c in zip(bars, closes, strict=True)]
    return pa.table(
        {
            "ts": pa.array([b[0] for b in bars], pa.timestamp("ms", tz="UTC")),
            "symbol": [b[1] for b in bars],
            "exchange": [b[2] for b in bars],
            "pair": [f"{b[1]}USDT" for b in bars],
            "open": closes,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume_usd": [1e6] * len(bars),
        },
        schema=MARKET_ASSETS_BY_NAME["price_ohlc"].schema,
    )


def oi_table(rows: Sequence[tuple[int, str, float, float]]) -> pa.Table:
    """open_interest_ohlc rows from (bar start ms, symbol, open, close)."""
    return pa.table(
        {
            "ts": pa.array([r[0] for r in rows], pa.timestamp("ms", tz="UTC")),
            "symbol": [r[1] for r in rows],
            "open": [float(r[2]) for r in rows],
            "high": [float(max(r[2], r[3])) for r in rows],
            "low": [float(min(r[2], r[3])) for r in rows],
            "close": [float(r[3]) for r in rows],
        },
        schema=MARKET_ASSETS_BY_NAME["open_interest_ohlc"].schema,
    )
