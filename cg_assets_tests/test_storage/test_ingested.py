"""The record of ingested segment ranges: merged, written atomically, shared safely."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from cg_assets.storage import IngestedRanges, Lake
from cg_assets.storage.ingested import IngestRecordError, add_range, covers


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


def test_the_record_lives_beside_the_days_and_no_day_listing_sees_it(tmp_path: Path):
    lake = Lake(tmp_path)
    record = IngestedRanges(lake, "orders")
    assert record.ranges() == []
    assert record.add(0, 4) == [(0, 4)]
    assert IngestedRanges(Lake(tmp_path), "orders").ranges() == [(0, 4)]
    assert lake.days("orders") == []
    assert Path(record.where).is_file()
    assert not list(Path(record.where).parent.glob(".*.tmp"))


def test_an_unreadable_record_stops_with_its_path_and_is_left_alone(tmp_path: Path):
    record = IngestedRanges(Lake(tmp_path), "orders")
    record.add(0, 1)
    Path(record.where).write_text('{"ranges": [[0, "x"]]}')
    with pytest.raises(IngestRecordError, match=r"_ingested_segments\.json is not a record"):
        record.ranges()
    with pytest.raises(IngestRecordError):
        record.add(2, 3)
    assert Path(record.where).read_text() == '{"ranges": [[0, "x"]]}'


def _add_many(data_dir: str, start: int) -> None:
    record = IngestedRanges(Lake(data_dir), "orders")
    for seq in range(start, 200, 2):
        record.add(seq, seq)


def test_concurrent_writers_lose_no_range(tmp_path: Path):
    """Two processes record interleaved seqs; the lock makes their read-modify-writes whole."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(tmp_path), s)) for s in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert IngestedRanges(Lake(tmp_path), "orders").ranges() == [(0, 199)]
