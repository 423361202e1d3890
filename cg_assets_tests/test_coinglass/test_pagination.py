from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cg_assets.coinglass.pagination import merge_bars, windows

H = 3_600_000


def bars_in(lo: int, hi: int, step: int) -> list[int]:
    first = -(-lo // step) * step
    return list(range(first, hi, step))


def test_aligned_range_of_exactly_limit_bars_is_one_window():
    assert windows(0, 1000 * H, H) == [(0, 1000 * H)]


def test_one_bar_more_than_limit_needs_a_second_window():
    assert windows(0, 1001 * H, H) == [(0, 1000 * H), (1000 * H, 1001 * H)]


def test_unaligned_start_moves_to_the_next_boundary():
    assert windows(H + 1, 1002 * H, H) == [(2 * H, 1002 * H)]


def test_partial_last_window_ends_at_end():
    assert windows(0, 2500 * H, H) == [(0, 1000 * H), (1000 * H, 2000 * H), (2000 * H, 2500 * H)]


@pytest.mark.parametrize(("lo", "hi"), [(5 * H, 5 * H), (5 * H + 1, 6 * H), (6 * H, 5 * H)])
def test_range_without_a_bar_has_no_window(lo, hi):
    assert windows(lo, hi, H) == []


def test_rejects_nonsense_sizes():
    with pytest.raises(ValueError, match="interval_ms > 0"):
        windows(0, H, 0)


@settings(deadline=None)
@given(
    lo=st.integers(0, 10**13),
    length=st.integers(0, 5000 * 60_000),
    step=st.sampled_from([60_000, 300_000, H, 4 * H]),
    limit=st.integers(1, 1000),
)
def test_windows_tile_exactly_the_bars_of_the_range(lo, length, step, limit):
    hi = lo + length
    wins = windows(lo, hi, step, limit)
    covered = [b for w_lo, w_hi in wins for b in bars_in(w_lo, w_hi, step)]
    assert covered == bars_in(lo, hi, step)
    assert all(len(bars_in(w_lo, w_hi, step)) <= limit for w_lo, w_hi in wins)
    assert all(a[1] == b[0] for a, b in pairwise(wins))
    assert len(wins) == -(-len(covered) // limit)


def test_merge_keeps_the_range_dedups_last_wins_and_sorts():
    pages = [
        [{"time": 3 * H, "v": "old"}, {"time": H, "v": 1}, {"time": 0, "v": "before"}],
        [{"time": 3 * H, "v": "new"}, {"time": 2 * H, "v": 2}, {"time": 4 * H, "v": "end"}],
    ]
    merged = merge_bars(pages, H, 4 * H)
    assert merged == [{"time": H, "v": 1}, {"time": 2 * H, "v": 2}, {"time": 3 * H, "v": "new"}]


def test_merge_accepts_string_times_and_copies_rows():
    row = {"time": str(H), "v": 1}
    merged = merge_bars([[row]], 0, 2 * H)
    assert merged == [row]
    assert merged[0] is not row


def test_merge_of_nothing_is_empty():
    assert merge_bars([[], []], 0, H) == []
