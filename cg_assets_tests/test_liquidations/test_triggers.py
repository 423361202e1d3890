"""Heads-up triggers: at, below and above each limit, once per coin and minute, across ticks."""

from __future__ import annotations

import pytest

from cg_assets.liquidations.triggers import (
    MINUTE_MS,
    TriggerState,
    TriggerThresholds,
    find_triggers,
)

T0 = 1_790_000_040_000 // MINUTE_MS * MINUTE_MS  # a minute boundary


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


def run(events: list[dict], state: TriggerState | None = None, **limits: float):
    state = state or TriggerState()
    return find_triggers(events, state, TriggerThresholds(**limits)), state


@pytest.mark.parametrize(("usd", "fires"), [(999_999.99, False), (1_000_000, True), (2e6, True)])
def test_single_order_limit(usd: float, fires: bool):
    triggers, _ = run([order(usd)])
    assert [t.kind for t in triggers] == (["single"] if fires else [])
    if fires:
        assert triggers[0].usd == usd
        assert triggers[0].received_at == T0 + 200


def test_minute_total_fires_once_when_it_crosses_the_limit():
    events = [order(900_000, i=i) for i in range(8)]  # 5.4M in all; crosses at the 6th
    triggers, _ = run(events)
    [trigger] = triggers
    assert trigger.kind == "minute"
    assert trigger.usd == pytest.approx(5_400_000)
    assert trigger.received_at == T0 + 5 + 200


def test_just_below_the_minute_limit_stays_quiet():
    triggers, _ = run([order(999_999, i=i) for i in range(5)])  # 4,999,995
    assert triggers == []


def test_a_minute_spanning_two_ticks_fires_through_the_cursor():
    first, state = run([order(900_000, i=i) for i in range(4)])
    assert first == []
    state = TriggerState.from_cursor(state.to_cursor())
    second, state = run([order(900_000, i=10 + i) for i in range(3)], state)
    assert [t.kind for t in second] == ["minute"]
    assert second[0].usd == pytest.approx(5_400_000)  # the order that crossed the limit
    # The same coin-minute does not fire again, even with a single big order.
    third, _ = run([order(3e6, i=30)], TriggerState.from_cursor(state.to_cursor()))
    assert third == []


def test_coins_and_minutes_are_separate():
    triggers, _ = run(
        [order(1e6), order(1e6, coin="ETH"), order(1e6, t=T0 + MINUTE_MS), order(1e6, i=1)]
    )
    assert [(t.coin, t.minute) for t in triggers] == [
        ("BTC", T0),
        ("ETH", T0),
        ("BTC", T0 + MINUTE_MS),
    ]


def test_side_and_largest_order():
    triggers, _ = run([order(2e6, side="short"), order(400_000, side="long", i=1), order(1, i=2)])
    [trigger] = triggers
    assert trigger.side == "short"
    assert trigger.largest["usd_value"] == 2e6
    assert "raw" not in trigger.largest


def test_late_orders_and_the_cursor_stay_bounded():
    _, state = run([order(10, t=T0 + m * MINUTE_MS) for m in range(10)])
    assert sorted(int(m) for m in state.minutes["BTC"]) == [T0 + m * MINUTE_MS for m in (7, 8, 9)]
    late, state = run([order(5e6, t=T0)], state)  # nine minutes late: too late to warn
    assert late == []
    assert len(state.to_cursor()) < 2_000


def test_thresholds_must_be_positive():
    with pytest.raises(ValueError, match="single_usd must be a positive USD amount, got 0"):
        TriggerThresholds(single_usd=0)
