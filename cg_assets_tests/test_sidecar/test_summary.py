"""Segment summaries: what they add up, and that only a sound summary file is believed."""

from __future__ import annotations

import contextlib
import itertools
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cg_assets_tests.test_sidecar.conftest import assert_same_summary
from ws_sidecar.summary import (
    MINUTE_MS,
    CoinMinute,
    SegmentSummary,
    Tally,
    parse_summary,
    summarize,
)

T0 = 1_700_000_040_000 // MINUTE_MS * MINUTE_MS


def fact(coin: str, t: int, side: str, usd: float, received: int | None = None) -> dict:
    """A spool event with the fields a summary reads."""
    return {
        "kind": "event",
        "event_id": f"{coin}{t}{side}{usd}",
        "symbol": coin,
        "time": t,
        "side": side,
        "usd_value": usd,
        "received_at": t + 100 if received is None else received,
        "exchange": "Binance",
        "pair": f"{coin}USDT",
        "price": 10.0,
        "source": "ws",
    }


def test_totals_counts_and_largest_per_coin_and_minute():
    summary = summarize(
        [
            fact("BTC", T0 + 5, "long", 100.0),
            fact("ETH", T0 + 6, "short", 7.0),
            fact("BTC", T0 + 7, "short", 300.0, received=T0 + 50),  # received early
            fact("BTC", T0 + MINUTE_MS, "long", 1.0),
            fact("BTC", T0 + 9, "long", 50.0),
        ],
        gaps=[(T0 - 1_000, T0 - 10)],
        quarantined=3,
    )
    assert (summary.events, summary.gaps, summary.quarantined, summary.skipped) == (5, 1, 3, 0)
    assert (summary.time_min, summary.time_max) == (T0 - 1_000, T0 + MINUTE_MS + 100)
    btc, eth, btc_next = summary.coin_minutes  # by first receipt
    assert btc == CoinMinute(
        coin="BTC",
        minute=T0,
        long_usd=150.0,
        short_usd=300.0,
        long_count=2,
        short_count=1,
        first_received_at=T0 + 50,
        largest={"exchange": "Binance", "pair": "BTCUSDT", "side": "short", "price": 10.0,
                 "usd_value": 300.0, "time": T0 + 7, "received_at": T0 + 50},
    )  # fmt: skip
    assert (eth.coin, eth.short_usd, eth.short_count, eth.long_count) == ("ETH", 7.0, 1, 0)
    assert (btc_next.minute, btc_next.long_usd) == (T0 + MINUTE_MS, 1.0)
    assert parse_summary(summary.to_json()) == summary


def test_bounds_cover_a_stamp_that_leads_its_receipt():
    summary = summarize([fact("BTC", T0 + 500, "long", 1.0, received=T0 + 100)])
    assert (summary.time_min, summary.time_max) == (T0 + 100, T0 + 500)


def test_an_empty_segment_has_no_bounds():
    assert summarize([]) == SegmentSummary()
    assert parse_summary(SegmentSummary().to_json()) == SegmentSummary()


GOOD = json.loads(summarize([fact("BTC", T0, "long", 5.0)]).to_json())


def damaged(path: str, value: object) -> dict:
    doc = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("version", 2, "not a version 1"),
        ("events", -1, "counts must be integers >= 0"),
        ("skipped", 1.5, "counts must be integers >= 0"),
        ("time_min", T0 * 1000, "time bounds"),
        ("time_max", T0 - 1, "time bounds"),
        ("coin_minutes", {}, "coin_minutes must be a list"),
        ("coin_minutes.0.coin", "", "coin must be a non-empty string"),
        ("coin_minutes.0.minute", T0 + 1, "minute must be"),
        ("coin_minutes.0.minute", T0 * 1000, "minute must be"),
        ("coin_minutes.0.long_usd", math.inf, "long_usd must be a finite number >= 0"),
        ("coin_minutes.0.short_usd", -1, "short_usd must be a finite number >= 0"),
        ("coin_minutes.0.long_count", 0, "not both 0"),
        ("coin_minutes.0.first_received_at", None, "first_received_at must be"),
        ("coin_minutes.0.largest", [], "largest must be an object"),
        ("coin_minutes.0.largest.usd_value", "big", "usd_value must be a finite number > 0"),
        ("coin_minutes.0.largest.side", "up", "side must be 'long' or 'short'"),
        ("coin_minutes.0.extra", 1, "not a coin-minute"),
    ],
)
def test_a_summary_with_an_unusable_field_is_refused(path: str, value: object, problem: str):
    with pytest.raises(ValueError, match=problem):
        parse_summary(json.dumps(damaged(path, value)))


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_parsing_any_bytes_raises_nothing_but_value_error(data: bytes | str):
    with contextlib.suppress(ValueError):
        parse_summary(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(path=st.sampled_from([*GOOD, *(f"coin_minutes.0.{k}" for k in GOOD["coin_minutes"][0])]),
       value=json_values)  # fmt: skip
def test_any_field_replaced_by_any_value_is_parsed_or_refused(path: str, value: object):
    try:
        summary = parse_summary(json.dumps(damaged(path, value)))
    except ValueError:
        return
    for cm in summary.coin_minutes:
        assert cm.minute % MINUTE_MS == 0
        assert cm.largest["usd_value"] > 0


events = st.lists(
    st.builds(
        fact,
        coin=st.sampled_from(["BTC", "ETH"]),
        t=st.integers(T0 - MINUTE_MS, T0 + 2 * MINUTE_MS),
        side=st.sampled_from(["long", "short"]),
        usd=st.floats(1.0, 1e7),
        received=st.integers(T0 - MINUTE_MS, T0 + 2 * MINUTE_MS),
    ),
    max_size=30,
)


@given(events=events, cuts=st.lists(st.integers(0, 30), max_size=4), gap=st.booleans())
def test_merged_tallies_of_the_parts_equal_the_tally_of_the_whole(
    events: list[dict], cuts: list[int], gap: bool
):
    """What the sink does: each frame tallied on arrival (or its lines read, when a frame is
    split between segments), the segment's tallies merged in order."""
    gaps = [(T0 - 5, T0 + 5)] if gap else []
    whole = summarize(events, gaps, quarantined=1)
    bounds = sorted({0, len(events), *(c for c in cuts if c <= len(events))})
    merged = Tally()
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        part = events[lo:hi]
        if i % 2:
            merged.merge(Tally().add_lines(json.dumps(e) for e in part))
        else:
            merged.merge(Tally().add_events(part))
    for start, end in gaps:
        merged.merge(Tally().add_gap(start, end))
    assert_same_summary(merged.summary(quarantined=1), whole)
