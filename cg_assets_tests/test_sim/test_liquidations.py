"""LiquidationFeed: events drawn from the synthetic market, generated as a clock advances."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cg_assets.coinglass.plans import DAY_MS, MINUTE_MS
from cg_assets.sim import LiquidationFeed
from cg_assets.sim.instruments import COINS
from cg_assets_tests.test_sim.conftest import NOW_MS, Clock

SECOND = 1_000


@pytest.fixture(scope="module")
def day_of_events(sim_market) -> tuple[LiquidationFeed, list]:
    """One day at 2 events/s, generated in a single advance (shared by the statistics tests)."""
    clock = Clock(NOW_MS - DAY_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=2.0, clock=clock)
    clock.now = NOW_MS
    feed.advance()
    return feed, feed.events()


def test_events_arrive_at_the_rate_in_time_order(sim_market):
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=10.0, clock=clock)
    assert len(feed.advance()) == 0  # nothing happened yet
    clock.now += 1_000 * SECOND
    batch = feed.advance()
    assert 9_500 <= len(batch) <= 10_500
    assert np.all(np.diff(batch.time) >= 0)
    assert np.array_equal(batch.seq, np.arange(len(batch)))
    assert batch.time[0] > NOW_MS
    assert batch.time[-1] <= clock.now
    assert feed.last_seq == len(batch) - 1


def test_rate_can_change_at_runtime_and_time_never_goes_back(sim_market):
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=0.0, clock=clock)
    clock.now += 10 * SECOND
    assert len(feed.advance()) == 0
    feed.rate_per_s = 50_000
    clock.now += SECOND
    assert 49_000 <= len(feed.advance()) <= 51_000
    assert len(feed.advance(clock.now - SECOND)) == 0
    with pytest.raises(ValueError, match="rate_per_s"):
        feed.rate_per_s = -1


def test_only_usdt_perpetuals_chosen_by_volume_share(day_of_events):
    feed, events = day_of_events
    assert {i.kind for i in feed.instruments} == {"linear_perp"}
    assert {i.quote_asset for i in feed.instruments} == {"USDT"}
    listed = {(i.exchange, i.instrument_id, i.base_asset) for i in feed.instruments}
    assert {(e.exchange, e.pair, e.coin) for e in events} <= listed
    coins = [c for c, _ in Counter(e.coin for e in events).most_common()]
    by_volume = sorted(COINS, key=lambda c: -COINS[c].daily_volume_usd)
    assert coins[:3] == by_volume[:3]
    exchanges = [x for x, _ in Counter(e.exchange for e in events).most_common()]
    assert exchanges == ["Binance", "Bybit", "OKX", "Bitget"]


def test_price_lies_within_the_pairs_minute_bar(sim_market, day_of_events):
    _, events = day_of_events
    for event in events[::500]:
        minute = event.time - event.time % MINUTE_MS
        bar = sim_market.price_history(
            event.exchange, event.pair, MINUTE_MS, minute, minute + 1, NOW_MS
        ).iloc[0]
        half_tick = 0.5 * 10.0 ** -COINS[event.coin].price_decimals
        assert bar["low"] - half_tick <= event.price <= bar["high"] + half_tick


def test_longs_are_liquidated_more_after_falls(sim_market, day_of_events):
    _, events = day_of_events
    btc = [e for e in events if e.coin == "BTC"]
    times = np.array([e.time for e in btc])
    minutes = times - times % MINUTE_MS
    closes = sim_market.price_history("Binance", "BTCUSDT", MINUTE_MS, NOW_MS - 2 * DAY_MS, NOW_MS)
    close = dict(zip(closes["time"].tolist(), closes["close"].tolist(), strict=True))
    move = np.array([close[m] / close[m - 15 * MINUTE_MS] - 1 for m in minutes.tolist()])
    long_ = np.array([e.side == "long" for e in btc])
    falls, rises = move < -0.002, move > 0.002
    assert falls.sum() > 100
    assert rises.sum() > 100
    assert long_[falls].mean() > long_[rises].mean() + 0.2


def test_usd_values_are_lognormal_with_whales(day_of_events):
    _, events = day_of_events
    usd = np.array([e.usd_value for e in events])
    assert 1_500 < np.median(usd) < 4_000
    assert (usd >= 1e6).sum() >= 5
    assert np.array_equal(usd, np.round(usd, 4))


def test_burst_injects_a_one_sided_cascade_now(sim_market):
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=100.0, clock=clock)
    clock.now += 5 * SECOND
    cascade = feed.burst("ETH", 12_000_000, 40, side="long", exchange="OKX")
    assert len(cascade) == 40
    assert {(e.coin, e.exchange, e.pair, e.side) for e in cascade} == {
        ("ETH", "OKX", "ETH-USDT-SWAP", "long")
    }
    assert {e.time for e in cascade} == {clock.now}
    assert sum(e.usd_value for e in cascade) == pytest.approx(12_000_000, abs=0.01)
    history = feed.events()
    assert history[-40:] == cascade  # after everything generated before it
    assert len(history) > 400
    spread = feed.burst("BTC", 1_000_000, 200)
    assert len({e.side for e in spread}) == 1
    assert len({e.exchange for e in spread}) > 1
    with pytest.raises(ValueError, match="no USDT perpetual"):
        feed.burst("HYPE", 1e6, 3, exchange="OKX")


def test_history_keeps_the_newest_max_events(sim_market):
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=1_000.0, max_events=5_000, clock=clock)
    for _ in range(30):
        clock.now += 500
        feed.advance()
    assert len(feed) == 5_000
    seqs = [e.seq for e in feed.events()]
    assert seqs == list(range(feed.last_seq - 4_999, feed.last_seq + 1))


def test_history_forgets_events_older_than_history_s(sim_market):
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=50.0, history_s=60, clock=clock)
    clock.now += 40 * SECOND
    feed.advance()
    feed.rate_per_s = 0
    clock.now += 40 * SECOND
    feed.advance()
    assert 0 < len(feed) < 2_000
    assert min(e.time for e in feed.events()) >= clock.now - 60 * SECOND


def test_since_and_query_read_the_history(sim_market):
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(sim_market, rate_per_s=200.0, clock=clock)
    clock.now += 60 * SECOND
    everything = feed.advance().events()
    assert feed.since(99).events() == everything[100:]
    assert len(feed.since(feed.last_seq)) == 0
    start, end = NOW_MS + 10 * SECOND, NOW_MS + 20 * SECOND
    matching = [
        e
        for e in everything
        if start <= e.time < end
        and e.coin == "BTC"
        and e.exchange == "Bybit"
        and e.usd_value >= 500
    ]
    assert feed.query(start, end, "BTC", "Bybit", 500).events() == matching
    assert feed.query(start, end, "BTC", "Bybit", 500, newest=3).events() == matching[-3:]
