from datetime import UTC, datetime

import pyarrow as pa

from cg_assets.liquidations.orders import SCHEMA, events_to_table, merge

T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)


def event(i: int, source: str = "ws", usd: float = 1000.0) -> dict:
    return {
        "time": T0 + i,
        "symbol": "BTC",
        "exchange": "Binance",
        "pair": "BTCUSDT",
        "side": "long" if i % 2 else "short",
        "price": 90_000.0 + i,
        "usd_value": usd,
        "source": source,
        "event_id": f"id{i}",
    }


def test_events_become_typed_rows():
    table = events_to_table([event(1)])
    assert table.schema == SCHEMA
    assert table.to_pylist()[0]["ts"] == datetime(2026, 3, 1, 0, 0, 0, 1000, tzinfo=UTC)


def test_merge_into_empty_day():
    result = merge(None, events_to_table([event(1), event(2)]))
    assert (result.added, result.duplicates, result.table.num_rows) == (2, 0, 2)


def test_merge_drops_copies_already_stored_and_within_the_batch():
    day = merge(None, events_to_table([event(1), event(2)])).table
    result = merge(day, events_to_table([event(2), event(3), event(3)]))
    assert (result.added, result.duplicates) == (1, 2)
    assert result.table.column("event_id").to_pylist() == ["id1", "id2", "id3"]


def test_ws_copy_wins_over_rest_copy_in_one_batch():
    result = merge(None, events_to_table([event(5, "rest"), event(5, "ws")]))
    assert result.table.column("source").to_pylist() == ["ws"]


def test_stored_row_is_kept_even_if_a_ws_copy_arrives_later():
    day = merge(None, events_to_table([event(5, "rest")])).table
    result = merge(day, events_to_table([event(5, "ws")]))
    assert result.table.column("source").to_pylist() == ["rest"]
    assert result.added == 0


def test_merge_output_is_sorted_by_time():
    result = merge(None, events_to_table([event(9), event(1), event(4)]))
    assert result.table.column("event_id").to_pylist() == ["id1", "id4", "id9"]
    assert isinstance(result.table, pa.Table)
