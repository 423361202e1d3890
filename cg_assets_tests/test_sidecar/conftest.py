"""Helpers shared by the sidecar's tests."""

from __future__ import annotations

import dataclasses

import pytest

from ws_sidecar.summary import CoinMinute, SegmentSummary


def assert_same_summary(got: SegmentSummary, expected: SegmentSummary) -> None:
    """Equal, except that USD sums may differ in the last bit: tallies merged part by part add
    the same amounts in another order."""
    assert _usd(got) == pytest.approx(_usd(expected))
    assert _without_usd(got) == _without_usd(expected)


def _usd(summary: SegmentSummary) -> list[float]:
    return [x for cm in summary.coin_minutes for x in (cm.long_usd, cm.short_usd)]


def _without_usd(summary: SegmentSummary) -> SegmentSummary:
    coin_minutes: tuple[CoinMinute, ...] = tuple(
        dataclasses.replace(cm, long_usd=0.0, short_usd=0.0) for cm in summary.coin_minutes
    )
    return dataclasses.replace(summary, coin_minutes=coin_minutes)
