import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from cg_assets.storage import Catalog, Lake
from cg_assets.storage.catalog import main
from cg_assets_tests.test_storage.conftest import names_beside


def table(values: list[float]) -> pa.Table:
    return pa.table({"ts": pa.array(range(len(values)), pa.int64()), "v": values})


def test_write_day_is_idempotent_and_replaces(lake: Lake):
    day = date(2026, 3, 1)
    path = lake.write_day("a", day, table([1.0, 2.0]))
    assert path == f"{lake.store.root}/lake/a/date=2026-03-01/part-0.parquet"
    lake.write_day("a", day, table([3.0]))
    assert lake.read_days("a", [day]).column("v").to_pylist() == [3.0]
    assert names_beside(lake, path) == ["part-0.parquet"]
    assert lake.days("a") == [day]
    assert lake.assets() == ["a"]


def test_a_local_lake_lives_in_the_data_dir(tmp_path: Path):
    path = Lake(tmp_path).write_day("a", date(2026, 3, 1), table([1.0]))
    assert path == str(tmp_path / "lake" / "a" / "date=2026-03-01" / "part-0.parquet")
    assert Path(path).is_file()


def test_empty_table_still_replaces_the_day(lake: Lake):
    day = date(2026, 3, 1)
    lake.write_day("a", day, table([1.0]))
    lake.write_day("a", day, table([]).cast(pa.schema([("ts", pa.int64()), ("v", pa.float64())])))
    assert lake.read_days("a", [day]).num_rows == 0


def test_read_days_without_files_is_none(lake: Lake):
    assert lake.read_days("missing", [date(2026, 1, 1)]) is None


def test_read_days_reads_older_files_by_column_name(lake: Lake):
    lake.write_day("a", date(2026, 3, 1), table([1.0]))
    lake.write_day("a", date(2026, 3, 2), pa.table({"v": [2.0], "extra": ["x"]}))
    got = lake.read_days("a", [date(2026, 3, 1), date(2026, 3, 2)])
    assert got.select(["ts", "v", "extra"]).to_pylist() == [
        {"ts": 0, "v": 1.0, "extra": None},
        {"ts": None, "v": 2.0, "extra": "x"},
    ]


def test_failed_write_keeps_the_previous_day(lake: Lake, monkeypatch: pytest.MonkeyPatch):
    day = date(2026, 3, 1)
    lake.write_day("a", day, table([1.0]))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("cg_assets.storage.lake.pq.write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        lake.write_day("a", day, table([9.0]))
    assert lake.read_days("a", [day]).column("v").to_pylist() == [1.0]
    assert names_beside(lake, lake.file("a", day)) == ["part-0.parquet"]


def test_catalog_views_cover_every_day(tmp_path: Path):
    lake = Lake(tmp_path)
    lake.write_day("a", date(2026, 3, 1), table([1.0]))
    catalog = Catalog(lake)
    assert catalog.ensure_views(["a", "b"]).created == ["a"]
    lake.write_day("a", date(2026, 3, 2), table([2.0, 3.0]))
    # A new day needs no catalog write: the view globs every day.
    status = catalog.ensure_views(["a"])
    assert (status.created, status.unchanged) == ([], ["a"])
    con = duckdb.connect(str(catalog.path), read_only=True)
    try:
        rows = con.sql("SELECT date, v FROM a ORDER BY v").fetchall()
    finally:
        con.close()
    assert rows == [(date(2026, 3, 1), 1.0), (date(2026, 3, 2), 2.0), (date(2026, 3, 2), 3.0)]


def test_catalog_recreated_when_the_file_is_deleted(tmp_path: Path):
    lake = Lake(tmp_path)
    lake.write_day("a", date(2026, 3, 1), table([1.0]))
    catalog = Catalog(lake)
    catalog.ensure_views(["a"])
    os.remove(catalog.path)
    assert catalog.ensure_views(["a"]).created == ["a"]


HOLD_OPEN = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
"""


def test_a_session_holding_the_catalog_defers_instead_of_failing(tmp_path: Path):
    lake = Lake(tmp_path)
    lake.write_day("a", date(2026, 3, 1), table([1.0]))
    catalog = Catalog(lake, connect_timeout_s=0.3)
    catalog.path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(catalog.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        status = catalog.ensure_views(["a"])
        assert status.deferred == ["a"]
        assert "held open by another process" in status.reason
    finally:
        holder.communicate("\n", timeout=30)
    assert Catalog(lake).ensure_views(["a"]).created == ["a"]


def test_after_one_deferral_the_same_catalog_defers_at_once(tmp_path: Path):
    lake = Lake(tmp_path)
    for name in ("a", "b"):
        lake.write_day(name, date(2026, 3, 1), table([1.0]))
    catalog = Catalog(lake, connect_timeout_s=0.3)
    catalog.path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(catalog.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        assert catalog.ensure_views(["a"]).deferred == ["a"]
        holder.communicate("\n", timeout=30)
        # Released now, but this run already knows the catalog was busy: no second wait.
        assert catalog.ensure_views(["b"]).deferred == ["b"]
    finally:
        if holder.poll() is None:
            holder.kill()
    assert Catalog(lake).ensure_views(["a", "b"]).created == ["a", "b"]


def test_an_s3_lake_has_no_views_in_the_file_and_a_session_sees_every_day(
    tmp_path: Path, s3_lake_url: str, monkeypatch: pytest.MonkeyPatch, capsys
):
    lake = Lake(tmp_path, s3_lake_url)
    lake.write_day("a", date(2026, 3, 1), table([1.0]))
    lake.write_day("a", date(2026, 3, 2), pa.table({"v": [2.0, 3.0], "note": ["x", "y"]}))
    catalog = Catalog(lake)
    status = catalog.ensure_views(["a"])
    assert (status.created, status.per_session) == ([], ["a"])
    assert not catalog.path.exists()
    with catalog.session() as con:
        rows = con.sql("SELECT date, ts, v, note FROM a ORDER BY v").fetchall()
    assert rows == [
        (date(2026, 3, 1), 0, 1.0, None),
        (date(2026, 3, 2), None, 2.0, "x"),
        (date(2026, 3, 2), None, 3.0, "y"),
    ]
    monkeypatch.setenv("CG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CG_LAKE_URL", s3_lake_url)
    main(["SELECT count(*) AS n FROM a"])
    assert capsys.readouterr().out == "n\n3\n"


def test_each_object_goes_to_s3_in_one_put(tmp_path: Path, s3_lake_url: str, s3_server):
    lake = Lake(tmp_path, s3_lake_url)
    day = date(2026, 3, 1)
    path = lake.write_day("a", day, table([float(v) for v in range(10_000)]))
    lake.write_state("a", "record.json", b"{}")
    # `path` starts with the test's own bucket, so no other test's requests match.
    assert [r for r in s3_server.requests_for(path) if not r.startswith(("GET", "HEAD"))] == [
        f"PUT /{path} HTTP/1.1"
    ]
    state = f"{s3_lake_url.removeprefix('s3://')}/lake/a/record.json"
    assert s3_server.requests_for(state) == [f"PUT /{state} HTTP/1.1"]
