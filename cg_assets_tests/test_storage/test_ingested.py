"""The record of ingested segment ranges: merged, written atomically, shared safely."""

from __future__ import annotations

import multiprocessing
from datetime import date
from pathlib import Path

import pytest

from cg_assets.storage import IngestedRanges, Lake
from cg_assets.storage.ingested import RECORD_NAME, IngestRecordError, add_range, covers
from cg_assets_tests.test_storage.conftest import names_beside


@pytest.mark.parametrize(
    ("ranges", "added", "expected"),
    [
        ([], (3, 5), [(3, 5)]),
        ([(0, 2)], (3, 5), [(0, 5)]),  # touching ranges join
        ([(0, 2)], (4, 5), [(0, 2), (4, 5)]),  # a hole stays a hole
        ([(0, 2), (4, 5)], (3, 3), [(0, 5)]),
        ([(0, 9)], (2, 4), [(0, 9)]),
        ([(5, 6)], (0, 1), [(0, 1), (5, 6)]),
    ],
)
def test_add_range(ranges: list[tuple[int, int]], added: tuple[int, int], expected: list):
    assert add_range(ranges, *added) == expected


def test_covers_and_empty_ranges():
    assert covers([(0, 2), (5, 5)], 5)
    assert not covers([(0, 2), (5, 5)], 3)
    with pytest.raises(ValueError, match=r"empty range 4\.\.3"):
        add_range([], 4, 3)


def test_the_record_lives_beside_the_days_and_no_day_listing_sees_it(
    tmp_path: Path, lake: Lake, lake_url: str | None
):
    record = IngestedRanges(lake, "orders")
    assert record.ranges() == []
    assert record.add(0, 4) == [(0, 4)]
    assert IngestedRanges(Lake(tmp_path, lake_url), "orders").ranges() == [(0, 4)]
    assert lake.days("orders") == []
    assert record.where == f"{lake_url or tmp_path}/lake/orders/_ingested_segments.json"
    assert names_beside(lake, lake.file("orders", date(2026, 1, 1))) == []
    assert lake.read_state("orders", RECORD_NAME) == b'{"ranges": [[0, 4]]}'


def test_an_unreadable_record_stops_with_its_path_and_is_left_alone(tmp_path: Path):
    record = IngestedRanges(Lake(tmp_path), "orders")
    record.add(0, 1)
    Path(record.where).write_text('{"ranges": [[0, "x"]]}')
    with pytest.raises(IngestRecordError, match=r"_ingested_segments\.json is not a record"):
        record.ranges()
    with pytest.raises(IngestRecordError):
        record.add(2, 3)
    assert Path(record.where).read_text() == '{"ranges": [[0, "x"]]}'


def _add_many(data_dir: str, url: str | None, dsn: str | None, start: int, stop: int) -> None:
    record = IngestedRanges(Lake(data_dir, url, dsn), "orders")
    for seq in range(start, stop, 2):
        record.add(seq, seq)


def _race(data_dirs: tuple[Path, Path], url: str | None, dsn: str | None, stop: int) -> None:
    """Two processes (each with a data dir of its own, as on two nodes) record interleaved
    seqs of one record."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_add_many, args=(str(d), url, dsn, start, stop))
        for d, start in zip(data_dirs, (0, 1), strict=True)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0


def test_concurrent_writers_lose_no_range(tmp_path: Path, lake: Lake, lake_url: str | None):
    """The lock makes two processes' read-modify-writes whole (for an S3 lake without a state
    database: a file lock of this node)."""
    _race((tmp_path, tmp_path), lake_url, None, 200)
    assert IngestedRanges(lake, "orders").ranges() == [(0, 199)]


def test_writers_on_two_nodes_of_an_s3_lake_share_advisory_locks(
    tmp_path: Path, s3_lake_url: str, postgres_dsn: str
):
    """Different data dirs share no file lock: only the state database's locks keep the
    record whole, so this fails if an S3 lake's lock ignored the DSN."""
    _race((tmp_path / "node-a", tmp_path / "node-b"), s3_lake_url, postgres_dsn, 120)
    assert IngestedRanges(Lake(tmp_path, s3_lake_url), "orders").ranges() == [(0, 119)]
    assert not (tmp_path / "node-a" / "locks").exists()
