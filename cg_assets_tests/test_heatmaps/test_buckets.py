"""Bucket maths on cases worked out by hand."""

from __future__ import annotations

import pytest

from cg_assets.heatmaps.buckets import (
    bucket_bounds,
    check_day_divisor,
    check_grid,
    price_bucket,
    time_bucket,
)


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (100.0, 0),  # the reference price opens bucket 0
        (100.1, 0),
        (100.25, 1),  # exactly on the edge: the bucket above (100.25/100 - 1 is 0.00249999...)
        (100.5, 2),
        (99.9, -1),
        (99.75, -1),  # on the lower edge of bucket -1
        (99.7499, -2),
        (99.5, -2),
        (95.0, -20),
        (105.0, 20),
    ],
)
def test_price_bucket_hand_cases(price: float, expected: int):
    assert price_bucket(price, 100.0, 0.0025) == expected


def test_edges_of_every_bucket_open_their_own_bucket():
    ref, grid = 87_654.3, 0.0025
    for bucket in range(-40, 41):
        low, high = bucket_bounds(bucket, ref, grid)
        assert price_bucket(low, ref, grid) == bucket
        assert price_bucket(high, ref, grid) == bucket + 1
        assert price_bucket((low + high) / 2, ref, grid) == bucket


def test_bucket_bounds_are_relative_to_the_reference():
    assert bucket_bounds(0, 200.0, 0.01) == pytest.approx((200.0, 202.0))
    assert bucket_bounds(-3, 200.0, 0.01) == pytest.approx((194.0, 196.0))


def test_time_bucket_aligns_to_the_bucket_size():
    minute = 60_000
    assert time_bucket(1_767_225_600_000 + 59_999, minute) == 1_767_225_600_000
    assert time_bucket(1_767_225_600_000 + 60_000, minute) == 1_767_225_660_000
    assert time_bucket(1_767_225_600_000 + 7 * minute, 5 * minute) == 1_767_225_600_000 + 5 * minute


@pytest.mark.parametrize("grid", [0.0, -0.01, 0.5, float("nan"), float("inf")])
def test_bad_grid_is_named(grid: float):
    with pytest.raises(ValueError, match=r"grid=.*fraction of the price"):
        check_grid("grid", grid)


@pytest.mark.parametrize("minutes", [0, -5, 7, 1441])
def test_bucket_minutes_must_tile_a_day(minutes: int):
    with pytest.raises(ValueError, match=rf"bucket_minutes={minutes}: .*divides a day"):
        check_day_divisor("bucket_minutes", minutes)


def test_good_values_pass_through():
    assert check_grid("grid", 0.0025) == 0.0025
    assert check_day_divisor("bucket_minutes", 15) == 15
