"""The `liquidation_orders` table: its columns and the de-duplicating merge of a day.

Events reach a day from several places: spool segments (WebSocket), REST gap fills, and a
re-run of the same segments after a crash. Every copy of one liquidation carries the same
`event_id`, so the merge keeps exactly one row per id, preferring what the day already held,
then WebSocket rows over REST ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from cg_assets.tables import Column, schema_of

COLUMNS: tuple[Column, ...] = (
    Column("ts", pa.timestamp("ms", tz="UTC"), "Time of the liquidation, UTC"),
    Column("symbol", pa.string(), "Coin ticker, e.g. BTC"),
    Column("exchange", pa.string(), "Exchange display name, e.g. Binance"),
    Column("pair", pa.string(), "The exchange's instrument id, e.g. BTCUSDT"),
    Column("side", pa.string(), "The side that was liquidated: long or short"),
    Column("price", pa.float64(), "Liquidation price, USD per coin"),
    Column("usd_value", pa.float64(), "Size of the liquidated position, USD"),
    Column("source", pa.string(), "ws (live stream) or rest (gap fill from order history)"),
    Column("event_id", pa.string(), "Deterministic id of the liquidation, for de-duplication"),
)
SCHEMA = schema_of(COLUMNS)

MERGE_SQL = """
SELECT ts, symbol, exchange, pair, side, price, usd_value, source, event_id
FROM (
    SELECT *, 0 AS priority FROM existing
    UNION ALL
    SELECT *, CASE source WHEN 'ws' THEN 1 ELSE 2 END AS priority FROM incoming
)
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY priority) = 1
ORDER BY ts, event_id
"""


@dataclass(frozen=True)
class MergeResult:
    table: pa.Table
    added: int
    duplicates: int


def events_to_table(events: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Spool or gap-fill event dicts (the spool's field names) as rows of the table."""
    rows = list(events)
    return pa.table(
        {
            "ts": pa.array([e["time"] for e in rows], pa.timestamp("ms", tz="UTC")),
            "symbol": [e["symbol"] for e in rows],
            "exchange": [e["exchange"] for e in rows],
            "pair": [e["pair"] for e in rows],
            "side": [e["side"] for e in rows],
            "price": pa.array([float(e["price"]) for e in rows], pa.float64()),
            "usd_value": pa.array([float(e["usd_value"]) for e in rows], pa.float64()),
            "source": [e["source"] for e in rows],
            "event_id": [e["event_id"] for e in rows],
        },
        schema=SCHEMA,
    )


def merge(existing: pa.Table | None, incoming: pa.Table) -> MergeResult:
    """One row per event_id across what the day held and what arrived."""
    existing = SCHEMA.empty_table() if existing is None else existing.select(SCHEMA.names)
    con = duckdb.connect()
    try:
        con.register("existing", existing)
        con.register("incoming", incoming)
        table = con.sql(MERGE_SQL).to_arrow_table().cast(SCHEMA)
    finally:
        con.close()
    added = table.num_rows - existing.num_rows
    return MergeResult(table, added, incoming.num_rows - added)
