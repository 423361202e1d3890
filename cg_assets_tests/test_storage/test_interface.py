"""The lake interface every asset uses: attach, publish, companion files, one catalog per run."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from cg_assets.resources import LakeResource
from cg_assets.storage import Catalog, Lake
from cg_assets_tests.test_storage.conftest import names_beside

SCHEMA = pa.schema(
    [("ts", pa.timestamp("ms", tz="UTC")), ("symbol", pa.string()), ("v", pa.float64())]
)
D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


def rows(*items: tuple[datetime, str, float]) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([i[0] for i in items], SCHEMA.field("ts").type),
            "symbol": pa.array([i[1] for i in items], pa.string()),
            "v": pa.array([i[2] for i in items], pa.float64()),
        },
        schema=SCHEMA,
    )


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def test_attach_without_files_is_the_declared_schema_plus_date(lake: Lake):
    con = duckdb.connect()
    assert lake.attach(con, "nothing", [D1, D2], SCHEMA) == 0
    described = con.sql("SELECT * FROM nothing").to_arrow_table()
    assert described.num_rows == 0
    assert described.column_names == ["ts", "symbol", "v", "date"]
    assert described.schema.field("date").type == pa.date32()
    # The same SQL runs whether or not a day exists.
    assert con.sql("SELECT count(*), sum(v) FROM nothing WHERE symbol = 'BTC'").fetchall() == [
        (0, None)
    ]


def test_attach_reads_only_the_asked_days_by_column_name(lake: Lake):
    lake.write_day("a", D1, rows((at(D1, 1), "BTC", 1.0)))
    # A day written under an older contract: columns in another order, one missing.
    lake.write_day("a", D2, pa.table({"v": [2.0], "ts": rows((at(D2, 2), "X", 0)).column("ts")}))
    lake.write_day("a", D3, rows((at(D3, 3), "ETH", 3.0)))
    con = duckdb.connect()
    assert lake.attach(con, "a", [D1, D2], SCHEMA, name="two_days") == 2
    got = con.sql("SELECT date, symbol, v FROM two_days ORDER BY v").fetchall()
    assert got == [(D1, "BTC", 1.0), (D2, None, 2.0)]


def test_publish_splits_by_day_replaces_empty_days_and_describes_the_write(
    tmp_path: Path, lake_url: str | None
):
    resource = LakeResource.at(tmp_path, lake_url=lake_url)
    resource.lake.write_day("a", D3, rows((at(D3, 5), "OLD", 9.0)))
    table = rows((at(D1, 1), "BTC", 1.0), (at(D1, 23), "ETH", 2.0), (at(D2, 0), "BTC", 3.0))
    published = resource.publish("a", table, [D1, D2, D3])
    assert sorted(published.files) == [D1, D2, D3]
    assert [resource.lake.read_days("a", [d]).num_rows for d in (D1, D2, D3)] == [2, 1, 0]
    meta = published.metadata
    assert meta["dagster/row_count"] == 3
    assert meta["days_written"] == 3
    assert meta["first_ts"].value == at(D1, 1).timestamp()
    assert meta["last_ts"].value == at(D2, 0).timestamp()
    assert [r.data["v"] for r in meta["preview"].value.records] == [1.0, 2.0, 3.0]
    assert "WHERE date BETWEEN '2026-03-01' AND '2026-03-03'" in meta["duckdb_query"].value
    assert meta["lake_path"].value == resource.lake.url("a")
    if lake_url is None:
        assert meta["catalog"] == "created views a"
    else:
        assert meta["lake_path"].value == f"{lake_url}/lake/a"
        assert meta["catalog"].startswith("views of a are made per session")
    with resource.catalog.session() as con:
        assert con.sql("SELECT date, count(*) FROM a GROUP BY date ORDER BY date").fetchall() == [
            (D1, 2),
            (D2, 1),
        ]


def test_publish_with_merge_keeps_unchanged_days_untouched(tmp_path: Path, lake_url: str | None):
    resource = LakeResource.at(tmp_path, lake_url=lake_url)
    resource.publish("a", rows((at(D1, 1), "BTC", 1.0)), [D1, D2])
    before = resource.lake.fs.get_file_info(resource.lake.file("a", D1)).mtime_ns
    seen: list[tuple[int | None, int]] = []

    def merge(existing: pa.Table | None, incoming: pa.Table) -> pa.Table | None:
        seen.append((None if existing is None else existing.num_rows, incoming.num_rows))
        if not incoming.num_rows:
            return None
        if existing is None:
            return incoming
        return pa.concat_tables([existing.cast(SCHEMA), incoming])

    published = resource.publish("a", rows((at(D2, 4), "ETH", 2.0)), [D1, D2], merge=merge)
    assert seen == [(1, 0), (0, 1)]
    assert list(published.files) == [D2]
    assert resource.lake.fs.get_file_info(resource.lake.file("a", D1)).mtime_ns == before
    assert published.metadata["dagster/row_count"] == 2  # the days as stored


def test_companion_files_replace_atomically(lake: Lake):
    lake.write_bytes("a", D1, "heatmap.png", b"old")
    path = lake.write_bytes("a", D1, "heatmap.png", b"\x89PNG new")
    with lake.fs.open_input_stream(path) as stream:
        assert stream.read() == b"\x89PNG new"
    assert names_beside(lake, path) == ["heatmap.png"]
    assert lake.days("a") == []  # a picture alone is not a day of data


HOLD_OPEN = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
"""


def test_one_catalog_per_run_waits_for_a_locked_warehouse_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    probes: list[str] = []
    probe = Catalog._probe

    def counting(self: Catalog) -> None:
        probes.append(str(self.path))
        probe(self)

    monkeypatch.setattr(Catalog, "_probe", counting)

    def build(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def _asset(lake: LakeResource) -> dg.MaterializeResult:
            published = lake.publish(name, rows((at(D1, 1), "BTC", 1.0)), [D1])
            return dg.MaterializeResult(metadata={"catalog": published.catalog.summary})

        return _asset

    resource = LakeResource.at(tmp_path, catalog_timeout_s=0.3)
    path = Catalog(Lake(tmp_path)).path
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        result = dg.materialize([build("first"), build("second")], resources={"lake": resource})
    finally:
        holder.communicate("\n", timeout=30)
    assert result.success
    summaries = [
        e.materialization.metadata["catalog"].value
        for e in result.get_asset_materialization_events()
    ]
    assert [s.split(":")[0] for s in summaries] == ["deferred first", "deferred second"]
    assert len(probes) == 1  # the second asset knew at once
