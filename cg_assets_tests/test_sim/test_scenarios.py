"""Story scenarios: episodes that make the hourly bars cross the signal rules' thresholds and
the liquidation feed cross the heads-up thresholds, while "calm" stays the plain market."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS, MINUTE_MS
from cg_assets.sim import Episode, LiquidationFeed, Scenario, SyntheticMarket, scenario_for
from cg_assets.sim.grid import _CHUNK, MinuteGrid
from cg_assets.sim.instruments import COINS
from cg_assets.sim.market import DEFAULT_EPOCH_MS
from cg_assets.sim.scenarios import SPAN_MIN, liquidated_usd, planted_effects
from cg_assets_tests.test_sim.conftest import EPOCH_MS, HOUR, NOW_MS, Clock

# The product's signal rules (issue 5, item 2) that an episode's hourly bars must trigger.
FUNDING_HIGH = 0.10  # % per 8h, crowded longs
FUNDING_LOW = -0.05  # % per 8h, crowded shorts
OI_CHANGE = 0.05
LIQUIDATIONS_USD = 50e6
RETAIL_LONG = 65.0
RETAIL_SHORT = 60.0
DIVERGENCE = 10.0
TAKER_LOW, TAKER_HIGH = 0.35, 0.65
# The heads-up thresholds the feed's injected orders must cross (with the brief's margins).
WHALE_USD = 1.5e6
MINUTE_USD = 6e6
ALERT_EXCHANGES = ("Binance", "OKX", "Bybit")  # the pipeline's default exchanges
TOP_OFHOUR_MS = NOW_MS - NOW_MS % HOUR


@pytest.fixture(scope="module")
def markets() -> dict[str, SyntheticMarket]:
    return {
        name: SyntheticMarket(seed=7, epoch_ms=EPOCH_MS, scenario=scenario_for(name, NOW_MS))
        for name in ("cascade", "squeeze")
    }


def grid(market: SyntheticMarket, coin: str, until_ms: int) -> dict[str, np.ndarray]:
    return market._grid.extend(coin, (until_ms - EPOCH_MS) // MINUTE_MS).arrays


def perpetuals(market: SyntheticMarket, coin: str) -> list[tuple[str, str, int]]:
    """(exchange, linear perpetual, funding interval h) of every exchange listing `coin`."""
    return [
        (i.exchange, i.instrument_id, i.funding_interval or 8)
        for listing in market.instruments().values()
        for i in listing
        if i.base_asset == coin and i.kind == "linear_perp"
    ]


def test_calm_is_exactly_the_plain_market(sim_market):
    calm = scenario_for("calm", NOW_MS)
    assert calm.episodes == ()
    market = SyntheticMarket(seed=7, epoch_ms=EPOCH_MS, scenario=calm)
    for coin in ("BTC", "ETH"):
        mine, plain = grid(market, coin, NOW_MS), grid(sim_market, coin, NOW_MS)
        assert mine.keys() == plain.keys()
        for name in mine:
            assert mine[name].dtype == plain[name].dtype
            assert np.array_equal(mine[name], plain[name]), name


def test_episodes_change_only_the_minutes_they_span(sim_market, markets):
    scenario = markets["cascade"].scenario
    assert scenario is not None
    until = NOW_MS + 2 * HOUR
    spans = np.zeros(grid(sim_market, "BTC", until)["close"].size, dtype=bool)
    for e in scenario.episodes:
        if e.coin == "BTC":
            spans[(e.first_ms - EPOCH_MS) // MINUTE_MS : (e.end_ms - EPOCH_MS) // MINUTE_MS] = True
    shaped, plain = grid(markets["cascade"], "BTC", until), grid(sim_market, "BTC", until)
    for name in ("close", "oi", "funding", "liq_long", "global_long"):
        changed = shaped[name] != plain[name]
        assert changed.any(), name
        assert not (changed & ~spans).any(), name
    for coin in ("SOL", "XRP"):  # not in the scenario's rotation
        shaped, plain = grid(markets["cascade"], coin, until), grid(sim_market, coin, until)
        assert all(np.array_equal(shaped[k], plain[k]) for k in plain)


def test_an_episode_is_drawn_the_same_across_a_chunk_boundary(sim_market):
    boundary = EPOCH_MS + _CHUNK * MINUTE_MS
    inside, across = boundary - 10 * 24 * HOUR, boundary + 20 * MINUTE_MS
    scenario = Scenario(
        "test", (Episode(inside, "ETH", "cascade"), Episode(across, "ETH", "cascade"))
    )
    market = SyntheticMarket(seed=7, epoch_ms=EPOCH_MS, scenario=scenario)
    # Generate minutes before the second episode first: nothing cached may lack it later.
    market.price_history("OKX", "ETH-USDT-SWAP", HOUR, inside - HOUR, inside, inside)
    shaped, plain = grid(market, "ETH", NOW_MS), grid(sim_market, "ETH", NOW_MS)

    def log_oi_change(start_ms: int) -> np.ndarray:
        lo = (start_ms - EPOCH_MS) // MINUTE_MS - 70
        hi = lo + 70 + SPAN_MIN + 10
        return np.log(shaped["oi"][lo:hi] / plain["oi"][lo:hi].astype(np.float64))

    assert np.abs(log_oi_change(across)).max() > 0.05
    np.testing.assert_allclose(log_oi_change(across), log_oi_change(inside), atol=1e-6)
    fresh = SyntheticMarket(seed=7, epoch_ms=EPOCH_MS, scenario=scenario)
    window = (across - HOUR, across + HOUR, NOW_MS)
    pd.testing.assert_frame_equal(
        fresh.open_interest_history("OKX", "ETH-USDT-SWAP", MINUTE_MS, *window),
        market.open_interest_history("OKX", "ETH-USDT-SWAP", MINUTE_MS, *window),
    )


def test_one_episode_before_the_anchor_then_one_every_eight_minutes():
    for anchor in (TOP_OFHOUR_MS, NOW_MS, TOP_OFHOUR_MS + HOUR - 1):
        scenario = scenario_for("cascade", anchor, ("BTC", "ETH"), live_ms=3 * HOUR)
        first, *live = scenario.episodes
        top = anchor - anchor % HOUR
        assert first.coin == "BTC"
        assert first.build_ms == HOUR
        # In the latest closed hourly bar, and flushed (15 minutes) before that bar closes.
        assert top - HOUR < first.start_ms <= top - 15 * MINUTE_MS
        assert 0 < live[0].start_ms - anchor <= 8 * MINUTE_MS  # a 10-minute demo sees one
        assert len(live) == 3 * 60 // 8
        assert np.all(np.diff([e.start_ms for e in live]) == 8 * MINUTE_MS)
        assert [e.coin for e in scenario.episodes[:5]] == ["BTC", "ETH", "BTC", "ETH", "BTC"]
        assert {e.kind for e in scenario.episodes} == {"cascade"}
        assert all(e.first_ms >= anchor - anchor % MINUTE_MS for e in live)
        assert live[0].build_ms > 0
    squeeze = scenario_for("squeeze", NOW_MS, ("SOL",), every_ms=20 * MINUTE_MS, live_ms=HOUR)
    assert {(e.coin, e.kind, e.side) for e in squeeze.episodes} == {("SOL", "squeeze", "short")}
    assert len(squeeze.episodes) == 4
    # A coin's build-up starts once its previous flush (15 minutes) is over.
    for before, after in zip(squeeze.episodes[1:], squeeze.episodes[2:], strict=False):
        assert after.first_ms == before.start_ms + 15 * MINUTE_MS


@dataclass(frozen=True)
class Story:
    """What the hourly bars around an episode of one kind must show."""

    sign: int  # +1 where a cascade's value is above the threshold, -1 for the mirror
    funding: float
    retail_long: float  # long % above (cascade) or below (squeeze: short % above 60)
    taker: float
    liquidated: str


STORIES = {
    "cascade": Story(1, FUNDING_HIGH, RETAIL_LONG, TAKER_LOW, "long"),
    "squeeze": Story(-1, FUNDING_LOW, 100 - RETAIL_SHORT, TAKER_HIGH, "short"),
}


@pytest.mark.parametrize("kind", ["cascade", "squeeze"])
def test_the_latest_closed_hour_tells_the_whole_story(markets, kind):
    story, market = STORIES[kind], markets[kind]
    assert market.scenario is not None
    episode = market.scenario.episodes[0]
    bar = TOP_OFHOUR_MS - HOUR  # the latest closed hourly bar at the anchor
    assert bar <= episode.start_ms < TOP_OFHOUR_MS
    window = (bar - 3 * HOUR, TOP_OFHOUR_MS, NOW_MS)

    oi = market.open_interest_aggregated("BTC", HOUR, *window).close.to_numpy()
    build_up, flush = oi[-2] / oi[-3] - 1, oi[-1] / oi[-2] - 1
    assert build_up > OI_CHANGE, "open interest builds up in the hour before"
    assert flush < -OI_CHANGE, "open interest is flushed"

    weighted = market.funding_weighted_history("BTC", "oi", HOUR, *window).close.iloc[-1]
    assert story.sign * (weighted - story.funding) > 0
    for exchange, symbol, interval_h in perpetuals(market, "BTC"):
        per_8h = market.funding_history(exchange, symbol, HOUR, *window).close.iloc[-1]
        per_8h *= 8 / interval_h
        assert story.sign * (per_8h - story.funding) > 0, exchange

        def long_pct(scope: str, exchange: str = exchange, symbol: str = symbol) -> float:
            bars = market.long_short_history(exchange, symbol, scope, HOUR, *window)
            return float(bars.long_percent.iloc[-1])

        retail = long_pct("global_account")
        assert story.sign * (retail - story.retail_long) > 0, exchange
        for scope in ("top_account", "top_position"):
            # Smart money on the other side of the crowd.
            assert story.sign * (retail - long_pct(scope)) >= DIVERGENCE, (exchange, scope)

    liq = market.liquidation_aggregated("BTC", ALERT_EXCHANGES, HOUR, *window).iloc[-1]
    assert liq[f"aggregated_{story.liquidated}_liquidation_usd"] > LIQUIDATIONS_USD
    taker = market.taker_aggregated("BTC", ALERT_EXCHANGES, HOUR, *window).iloc[-1]
    buy_share = taker.aggregated_buy_volume_usd / (
        taker.aggregated_buy_volume_usd + taker.aggregated_sell_volume_usd
    )
    assert story.sign * (story.taker - buy_share) > 0

    start = episode.start_ms
    minutes = market.price_history(
        "Binance", "BTCUSDT", MINUTE_MS, start, start + 5 * MINUTE_MS, NOW_MS
    )
    move = minutes.close.iloc[-1] / minutes.open.iloc[0] - 1
    assert story.sign * move < -0.03, "price breaks against the crowd within minutes"


def test_liquidations_scale_with_open_interest(sim_market, markets):
    market = markets["cascade"]
    assert market.scenario is not None
    until = NOW_MS + HOUR
    extra = {}
    for coin in ("BTC", "ETH"):
        episode = market.scenario.between(NOW_MS, until, coin)[0]
        lo = (episode.start_ms - EPOCH_MS) // MINUTE_MS
        added = grid(market, coin, until)["liq_long"] - grid(sim_market, coin, until)["liq_long"]
        extra[coin] = float(added[lo : lo + 15].astype(np.float64).sum())  # before the next
        assert extra[coin] == pytest.approx(liquidated_usd(episode), rel=1e-3)
        assert float(added[lo]) > 0.2 * extra[coin]  # most of it in the first minutes
    assert extra["BTC"] > LIQUIDATIONS_USD
    ratio = COINS["ETH"].open_interest_usd / COINS["BTC"].open_interest_usd
    assert extra["ETH"] / extra["BTC"] == pytest.approx(ratio, rel=1e-3)


def run_feed(market: SyntheticMarket, step_ms: int, until_ms: int, rate: float) -> LiquidationFeed:
    clock = Clock(NOW_MS)
    feed = LiquidationFeed(market, rate_per_s=rate, clock=clock)
    while clock.now < until_ms:
        clock.now = min(clock.now + step_ms, until_ms)
        feed.advance()
    return feed


@pytest.mark.parametrize("kind", ["cascade", "squeeze"])
def test_the_feed_injects_each_live_episode_as_its_minutes_pass(markets, kind):
    market = markets[kind]
    assert market.scenario is not None
    until = NOW_MS + 25 * MINUTE_MS
    feed = run_feed(market, 5_000, until, rate=0.5)
    live = market.scenario.between(NOW_MS, until - 6 * MINUTE_MS)
    assert [e.coin for e in live] == ["ETH", "BTC"]
    records = feed.injected
    for episode in live:
        side = episode.side
        assert side == ("long" if kind == "cascade" else "short")
        opening = [r for r in records if r.time_ms == episode.start_ms and r.wave == "opening"]
        assert len(opening) == 1
        assert (opening[0].coin, opening[0].side) == (episode.coin, side)
        assert opening[0].usd_total >= MINUTE_USD
        assert opening[0].largest_usd >= WHALE_USD
        tail = [
            r
            for r in records
            if r.wave == "tail"
            and r.coin == episode.coin
            and episode.start_ms + MINUTE_MS <= r.time_ms < episode.start_ms + 6 * MINUTE_MS
        ]
        assert len(tail) == 1
        assert tail[0].orders > 5
        assert tail[0].side == side

        minute = feed.query(episode.start_ms, episode.start_ms + MINUTE_MS, episode.coin).events()
        whale = [e for e in minute if e.time == episode.start_ms and e.usd_value >= WHALE_USD]
        assert len(whale) == 1
        assert whale[0].side == side
        on_side = [e for e in minute if e.side == side]
        assert sum(e.usd_value for e in on_side) >= opening[0].usd_total - 0.01
        assert len({e.exchange for e in on_side if e.usd_value >= 1e5}) > 1
        for e in minute:
            exact = market.price_at(e.exchange, e.pair, np.array([e.time]))[0]
            assert e.price == round(exact, COINS[e.coin].price_decimals)
        # The orders are a sample of what the aggregated REST bars count for that minute.
        bars = market.liquidation_aggregated(
            episode.coin, market.exchanges, MINUTE_MS, episode.start_ms, episode.start_ms + 1, until
        )
        assert bars[f"aggregated_{side}_liquidation_usd"].iloc[0] > opening[0].usd_total
    assert not [r for r in records if r.time_ms < NOW_MS]  # no orders before the feed began


def test_injected_orders_do_not_depend_on_how_often_the_feed_advances(markets):
    market = markets["cascade"]
    until = NOW_MS + 20 * MINUTE_MS
    often = run_feed(market, 1_000, until, rate=0.0)
    seldom = run_feed(market, 97_000, until, rate=0.0)
    assert len(often) > 20
    assert often.events() == seldom.events()
    assert often.injected == seldom.injected
    assert len(run_feed(markets["squeeze"], 97_000, until, rate=0.0)) == len(often)


def test_calm_feed_injects_nothing_and_a_burst_is_recorded(sim_market):
    feed = run_feed(sim_market, 60_000, NOW_MS + 20 * MINUTE_MS, rate=0.5)
    assert feed.injected == []
    (event,) = feed.burst("SOL", 2_500_000, 1, side="short", exchange="Bybit")
    (record,) = feed.injected
    assert (record.time_ms, record.coin, record.side, record.wave) == (
        event.time,
        "SOL",
        "short",
        "burst",
    )
    assert record.usd_total == record.largest_usd == event.usd_value == 2_500_000
    found = feed.query(event.time, event.time + 1, "SOL", "Bybit", min_usd=1e6).events()
    assert found == [event]


def test_bad_scenarios_are_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="scenario must be one of calm, cascade, squeeze"):
        scenario_for("crash", NOW_MS)
    with pytest.raises(ValueError, match="coins must name at least one"):
        scenario_for("cascade", NOW_MS, ())
    with pytest.raises(ValueError, match=r"coins must be among .* got FOO"):
        scenario_for("cascade", NOW_MS, ("BTC", "FOO"))
    with pytest.raises(ValueError, match="every_ms"):
        scenario_for("cascade", NOW_MS, every_ms=90_000)
    with pytest.raises(ValueError, match=r"kind must be .* got 'dump'"):
        Episode(NOW_MS - NOW_MS % MINUTE_MS, "BTC", "dump")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"strength must be .* got 0"):
        Episode(NOW_MS - NOW_MS % MINUTE_MS, "BTC", "cascade", strength=0)
    with pytest.raises(ValueError, match=f"start_ms must be on a minute boundary, got {NOW_MS}"):
        Episode(NOW_MS, "BTC", "cascade")


def test_planted_effects_drift_the_first_coin_and_cascade_the_second():
    start = DEFAULT_EPOCH_MS + 10 * DAY_MS
    scenario = planted_effects(start, start + 10 * DAY_MS, ("BTC", "ETH", "SOL"), seed=1)
    assert {d.coin for d in scenario.drifts} == {"BTC"}
    assert {e.coin for e in scenario.episodes} == {"ETH"}
    drift = scenario.drifts[0]
    fields = ("close", "funding")
    planted = MinuteGrid(5, DEFAULT_EPOCH_MS, scenario)
    calm = MinuteGrid(5, DEFAULT_EPOCH_MS, None)
    end = start + 12 * DAY_MS

    def bars(grid: MinuteGrid, coin: str) -> dict:
        return grid.bars(coin, HOUR_MS, start, end, end, fields).v

    p, c = bars(planted, "BTC"), bars(calm, "BTC")
    i = (drift.start_ms - start) // HOUR_MS
    # The bar closing at the drift's start holds the crowded funding; a bar closes with its
    # last minute (239 minutes into a 4 h drift): the price is then 0.8 % x 239/240 below the
    # calm market's, and back on it but 0.8 % x 1/240 another 4 h later.
    assert p["funding.close"][i - 1] > 0.10
    ratio = p["close.close"] / c["close.close"]
    assert ratio[i + 3] == pytest.approx(np.exp(-0.008 * 239 / 240), rel=1e-6)
    assert ratio[i + 7] == pytest.approx(np.exp(-0.008 / 240), rel=1e-6)
    # The third coin is the calm market, bit for bit.
    assert np.array_equal(bars(planted, "SOL")["close.close"], bars(calm, "SOL")["close.close"])
