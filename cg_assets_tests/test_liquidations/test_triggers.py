"""Heads-up triggers: at, below and above each limit, once per coin and minute, across ticks,
and never past the sensor's clock whatever the summaries claim."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cg_assets.liquidations.triggers import (
    MINUTE_MS,
    Scan,
    TriggerState,
    TriggerThresholds,
    find_triggers,
    gap_filled_minutes,
)
from ws_sidecar.summary import CoinMinute, summarize
from ws_sidecar.validate import MAX_MS

T0 = 1_790_000_040_000 // MINUTE_MS * MINUTE_MS  # a minute boundary
NOW = T0 + 30 * MINUTE_MS  # the sensor's clock, unless a test says otherwise


def order(usd: float, t: int = T0, coin: str = "BTC", side: str = "long", i: int = 0) -> dict:
    return {
        "symbol": coin,
        "exchange": "Binance",
        "pair": f"{coin}USDT",
        "side": side,
        "price": 90_000.0,
        "usd_value": usd,
        "time": t + i,
        "received_at": t + i + 200,
        "raw": {"big": "x" * 100},
    }


def run(
    segments: list[list[dict]],
    state: TriggerState | None = None,
    now: int = NOW,
    **limits: float,
) -> tuple[Scan, TriggerState]:
    """The triggers in `segments` (each a list of orders, summarised as the sidecar would)."""
    state = state or TriggerState()
    coin_minutes = [cm for events in segments for cm in summarize(events).coin_minutes]
    return find_triggers(coin_minutes, state, TriggerThresholds(**limits), now), state


@pytest.mark.parametrize(("usd", "fires"), [(999_999.99, False), (1_000_000, True), (2e6, True)])
def test_single_order_limit(usd: float, fires: bool):
    scan, _ = run([[order(500), order(usd, i=1)]])
    assert [t.kind for t in scan.triggers] == (["single"] if fires else [])
    if fires:
        assert scan.triggers[0].usd == usd
        assert scan.triggers[0].received_at == T0 + 1 + 200  # that order's own receipt


def test_minute_total_fires_once_at_the_segment_that_crosses_the_limit():
    orders = [order(900_000, i=i) for i in range(8)]  # 5.4M in all at the 6th, 7.2M at the 8th
    scan, _ = run([[o] for o in orders])
    [trigger] = scan.triggers
    assert trigger.kind == "minute"
    assert trigger.usd == pytest.approx(5_400_000)
    assert trigger.received_at == T0 + 5 + 200
    # In one segment the limit is seen at its end, with the segment's total; received_at is
    # the segment's first order for that coin-minute, so never later than the crossing.
    [whole] = run([orders])[0].triggers
    assert (whole.kind, whole.usd, whole.received_at) == ("minute", pytest.approx(7.2e6), T0 + 200)


def test_just_below_the_minute_limit_stays_quiet():
    scan, _ = run([[order(999_999, i=i) for i in range(5)]])  # 4,999,995
    assert scan.triggers == []


def test_a_minute_spanning_two_ticks_fires_through_the_cursor():
    first, state = run([[order(900_000, i=i) for i in range(4)]])
    assert first.triggers == []
    state = TriggerState.from_cursor(state.to_cursor())
    second, state = run([[order(900_000, i=10 + i) for i in range(3)]], state)
    assert [t.kind for t in second.triggers] == ["minute"]
    assert second.triggers[0].usd == pytest.approx(6_300_000)
    # The same coin-minute does not fire again, even with a single big order.
    third, _ = run([[order(3e6, i=30)]], TriggerState.from_cursor(state.to_cursor()))
    assert third.triggers == []


def test_coins_and_minutes_are_separate():
    scan, _ = run(
        [[order(1e6), order(1e6, coin="ETH"), order(1e6, t=T0 + MINUTE_MS), order(1e6, i=1)]]
    )
    assert [(t.coin, t.minute) for t in scan.triggers] == [
        ("BTC", T0),
        ("ETH", T0),
        ("BTC", T0 + MINUTE_MS),
    ]


def test_side_and_largest_order():
    scan, _ = run([[order(2e6, side="short"), order(400_000, side="long", i=1), order(1, i=2)]])
    [trigger] = scan.triggers
    assert trigger.side == "short"
    assert trigger.largest["usd_value"] == 2e6
    assert "raw" not in trigger.largest


def test_late_orders_and_the_cursor_stay_bounded():
    _, state = run([[order(10, t=T0 + m * MINUTE_MS) for m in range(10)]])
    assert sorted(int(m) for m in state.minutes["BTC"]) == [T0 + m * MINUTE_MS for m in (7, 8, 9)]
    late, state = run([[order(5e6, t=T0)]], state)  # nine minutes late: too late to warn
    assert late.triggers == []
    assert len(state.to_cursor()) < 2_000


def test_a_microsecond_stamp_neither_fires_nor_blinds_the_next_burst():
    poison = order(2e6, t=T0 * 1000 // MINUTE_MS * MINUTE_MS)  # minute of a µs-scaled stamp
    scan, state = run([[poison]], now=T0 + 10_000)
    assert (scan.triggers, scan.future) == ([], 1)
    assert state.newest <= T0
    burst, _ = run([[order(600_000, i=i) for i in range(10)]], state, now=T0 + 10_000)
    assert [(t.kind, t.usd) for t in burst.triggers] == [("minute", pytest.approx(6e6))]


def test_a_cursor_from_the_future_is_cut_back_to_the_clock():
    """A cursor written before timestamps were validated may hold a minute in the year
    58895; the next tick must forget it, or no real minute would ever look recent."""
    future = T0 * 1000
    poisoned = TriggerState(
        seq=4,
        newest=future,
        minutes={"BTC": {str(future): [2e6, 0.0, None]}, "ETH": {str(T0): [1.0, 0.0, None]}},
        fired=[f"BTC-{future}", f"ETH-{T0}"],
    )
    scan, state = run([[order(6e6, coin="SOL")]], poisoned, now=T0 + 1)
    assert [t.coin for t in scan.triggers] == ["SOL"]
    assert state.newest == T0
    assert state.fired == [f"ETH-{T0}", f"SOL-{T0}"]
    assert set(state.minutes) == {"ETH", "SOL"}


def test_thresholds_must_be_positive():
    with pytest.raises(ValueError, match="single_usd must be a positive USD amount, got 0"):
        TriggerThresholds(single_usd=0)


minutes = st.integers(1, MAX_MS // MINUTE_MS).map(lambda m: m * MINUTE_MS)
millis = st.integers(1, MAX_MS)
amounts = st.floats(0.01, 1e12, allow_nan=False, allow_infinity=False)


@st.composite
def coin_minutes(draw: st.DrawFn) -> CoinMinute:
    long_count, short_count = draw(st.tuples(st.integers(0, 5), st.integers(0, 5)).filter(any))
    largest = {
        "exchange": "Binance",
        "pair": "BTCUSDT",
        "side": draw(st.sampled_from(["long", "short"])),
        "price": draw(amounts),
        "usd_value": draw(amounts),
        "time": draw(millis),
        "received_at": draw(millis),
    }
    return CoinMinute(
        coin=draw(st.sampled_from(["BTC", "ETH", "SOL"])),
        minute=draw(st.one_of(minutes, st.integers(-5, 5).map(lambda m: T0 + m * MINUTE_MS))),
        long_usd=draw(amounts) if long_count else 0.0,
        short_usd=draw(amounts) if short_count else 0.0,
        long_count=long_count,
        short_count=short_count,
        first_received_at=draw(millis),
        largest=largest,
    )


@settings(max_examples=300, deadline=None)
@given(
    ticks=st.lists(st.tuples(st.lists(coin_minutes(), max_size=8), st.integers(-3, 3)), max_size=6),
    start=st.one_of(minutes, st.just(T0)),
)
def test_no_input_raises_or_moves_the_state_past_the_clock(
    ticks: list[tuple[list[CoinMinute], int]], start: int
):
    state = TriggerState(newest=start)
    now = T0
    for batch, step in ticks:
        now += step * 20_000
        scan = find_triggers(batch, state, TriggerThresholds(), now)
        state = TriggerState.from_cursor(state.to_cursor())
        limit = now - now % MINUTE_MS
        assert state.newest <= limit
        assert all(int(m) <= limit for per_coin in state.minutes.values() for m in per_coin)
        assert all(int(k.rsplit("-", 1)[1]) <= limit for k in state.fired)
        assert all(t.minute <= limit for t in scan.triggers)
        assert len(json.dumps(state.to_cursor())) < 20_000


def test_gap_filled_minutes_are_the_recent_ones_the_stream_did_not_deliver():
    """Orders only gap fill found, within the minutes still worth a warning; an order the
    stream also delivered (a gap is re-asked at its edges) is not counted twice."""
    now = T0 + 2 * MINUTE_MS + 5_000  # the kept minutes: T0, T0 + 1 min and T0 + 2 min
    filled = [
        {**order(3e6, T0 - 1), "event_id": "too-old"},
        {**order(2e6, T0), "event_id": "big"},
        {**order(5e5, T0 + MINUTE_MS, side="short"), "event_id": "edge"},
        {**order(4e5, T0 + MINUTE_MS, side="short", i=1), "event_id": "new"},
    ]
    summary = gap_filled_minutes(filled, live_ids={"edge"}, now_ms=now)
    assert [(cm.minute, cm.long_usd, cm.short_usd) for cm in summary.coin_minutes] == [
        (T0, 2e6, 0.0),
        (T0 + MINUTE_MS, 0.0, 4e5),
    ]
    assert summary.coin_minutes[0].largest["usd_value"] == 2e6
    late = find_triggers(summary.coin_minutes, TriggerState(), TriggerThresholds(), now)
    assert [(t.minute, t.kind) for t in late.triggers] == [(T0, "single")]
