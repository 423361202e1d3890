"""The spool sensor's and the ingestion asset's shared decisions, as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from cg_assets.liquidations.batches import (
    RETRY_BACKOFF_CAP_S,
    pending,
    retry_delay_s,
    take_batch,
    watermark,
)
from cg_assets.liquidations.sensors import consecutive_failures, ops_notice
from ws_sidecar.spool import Segment


def segs(*seqs: int) -> list[Segment]:
    return [Segment(s, Path(f"seg-{s}")) for s in seqs]


def test_pending_is_every_segment_not_recorded():
    assert [s.seq for s in pending(segs(0, 1, 2, 5, 6, 9), [(0, 1), (5, 6)])] == [2, 9]
    assert pending(segs(3, 4), [(0, 10)]) == []
    assert [s.seq for s in pending(segs(3, 4), [])] == [3, 4]


@pytest.mark.parametrize(
    ("on_disk", "ranges", "expected"),
    [
        ((4, 5, 6), [(0, 5)], 5),  # 6 is pending: nothing from 6 on may go
        ((4, 5, 6), [(0, 4), (6, 6)], 4),  # 6 is stored but 5 is not: stop below 5
        ((4, 5, 6), [(0, 9)], 6),  # all stored (prune still keeps the newest)
        ((4, 5, 6), [], 3),  # the oldest is pending: nothing may go
        ((), [(0, 9)], -1),
    ],
)
def test_the_watermark_stops_below_the_first_pending_segment(
    on_disk: tuple[int, ...], ranges: list[tuple[int, int]], expected: int
):
    assert watermark(segs(*on_disk), ranges) == expected


def test_a_batch_takes_records_up_to_the_cap_and_at_least_one_segment():
    sized = [("a", 4), ("b", 4), ("c", 4)]
    assert list(take_batch(sized, 8)) == ["a", "b"]
    assert list(take_batch(sized, 100, max_segments=2)) == ["a", "b"]
    assert list(take_batch([("big", 50), ("b", 1)], 10)) == ["big"]
    assert list(take_batch([], 10)) == []


def test_a_batch_asks_for_sizes_only_until_it_is_full():
    asked = []

    def sized():
        for name in "abcdef":
            asked.append(name)
            yield name, 5

    assert list(take_batch(sized(), 10)) == ["a", "b"]
    assert asked == ["a", "b", "c"]


def test_retry_delay_doubles_per_failure_up_to_the_cap():
    assert [retry_delay_s(n, 60) for n in range(5)] == [0, 60, 120, 240, 480]
    assert retry_delay_s(40, 60) == RETRY_BACKOFF_CAP_S
    assert retry_delay_s(3, 7200) == 7200  # a base above the cap is kept


@pytest.mark.parametrize(
    ("succeeded", "failures", "notice"),
    [
        ([], 0, None),
        ([True, False, False, False], 0, "recovered"),
        ([True, False, False], 0, None),  # the streak was too short to have paged
        ([False, False, False, True], 3, "failing"),
        ([False, False, False, False], 4, None),  # paged already, at the third
        ([False, True, False, False, False], 1, None),
    ],
)
def test_failure_streaks_and_ops_notices(succeeded: list[bool], failures: int, notice: str | None):
    assert consecutive_failures(succeeded) == failures
    assert ops_notice(succeeded, threshold=3) == notice
