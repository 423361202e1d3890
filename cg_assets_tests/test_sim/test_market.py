"""The synthetic market: deterministic, internally consistent, and shaped like the real one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cg_assets.sim import SyntheticMarket
from cg_assets_tests.test_sim.conftest import EPOCH_MS, HOUR, NOW_MS

DAY = 24 * HOUR
MINUTE = 60_000


def hourly(market: SyntheticMarket, method: str, *args: object, days: int = 40) -> pd.DataFrame:
    return getattr(market, method)(*args, HOUR, NOW_MS - days * DAY, NOW_MS, NOW_MS)


def test_same_seed_gives_same_bars_whatever_the_window(sim_market):
    wide = sim_market.price_history("Binance", "BTCUSDT", HOUR, EPOCH_MS, NOW_MS, NOW_MS)
    start = EPOCH_MS + 17 * DAY + 5 * HOUR
    narrow = sim_market.price_history("Binance", "BTCUSDT", HOUR, start, start + 30 * HOUR, NOW_MS)
    expected = wide[(wide.time >= start) & (wide.time < start + 30 * HOUR)].reset_index(drop=True)
    pd.testing.assert_frame_equal(narrow, expected)


def test_a_fresh_market_generating_late_bars_first_agrees_with_one_going_forward(sim_market):
    late_first = SyntheticMarket(seed=7, epoch_ms=EPOCH_MS)
    late = late_first.open_interest_history("OKX", "ETH-USDT-SWAP", HOUR, NOW_MS - DAY, NOW_MS)
    early = late_first.open_interest_history("OKX", "ETH-USDT-SWAP", HOUR, EPOCH_MS, EPOCH_MS + DAY)
    assert late.close.notna().all()
    pd.testing.assert_frame_equal(
        early,
        sim_market.open_interest_history(
            "OKX", "ETH-USDT-SWAP", HOUR, EPOCH_MS, EPOCH_MS + DAY, NOW_MS
        ),
    )


def test_a_different_seed_gives_a_different_market(sim_market):
    other = SyntheticMarket(seed=8, epoch_ms=EPOCH_MS)
    mine = hourly(sim_market, "price_history", "Binance", "BTCUSDT", days=2)
    theirs = hourly(other, "price_history", "Binance", "BTCUSDT", days=2)
    assert (mine.time == theirs.time).all()
    assert not np.allclose(mine.close, theirs.close)


def test_coarse_bars_aggregate_the_fine_bars_they_contain(sim_market):
    day_start = NOW_MS - NOW_MS % DAY - 3 * DAY
    fine = sim_market.price_history("Bybit", "SOLUSDT", HOUR, day_start, day_start + DAY, NOW_MS)
    coarse = sim_market.price_history("Bybit", "SOLUSDT", 4 * HOUR, day_start, day_start + DAY)
    groups = fine.groupby(fine.time // (4 * HOUR) * (4 * HOUR))
    assert np.allclose(coarse.open, groups.open.first())
    # The exchange basis drifts within a day, so extremes agree to within that drift.
    assert np.allclose(coarse.high, groups.high.max(), rtol=5e-4)
    assert np.allclose(coarse.low, groups.low.min(), rtol=5e-4)
    assert np.allclose(coarse.close, groups.close.last())
    assert np.allclose(coarse.volume_usd, groups.volume_usd.sum())


def test_bars_are_aligned_ascending_and_none_precede_the_listing(sim_market):
    bars = sim_market.price_history(
        "Binance", "BTCUSDT", 4 * HOUR, EPOCH_MS - 10 * DAY, EPOCH_MS + DAY, NOW_MS
    )
    assert bars.time.iloc[0] == EPOCH_MS
    assert (bars.time % (4 * HOUR) == 0).all()
    assert bars.time.is_monotonic_increasing
    assert len(bars) == 6


def test_the_current_bar_is_partial_and_closes_at_now(sim_market):
    bar_start = NOW_MS - NOW_MS % HOUR
    bars = sim_market.price_history("Binance", "BTCUSDT", HOUR, bar_start, NOW_MS + DAY, NOW_MS)
    minutes = sim_market.price_history("Binance", "BTCUSDT", MINUTE, bar_start, NOW_MS + 1, NOW_MS)
    assert bars.time.tolist() == [bar_start]
    assert minutes.time.iloc[-1] == NOW_MS - NOW_MS % MINUTE
    assert bars.close.iloc[0] == pytest.approx(minutes.close.iloc[-1])
    assert bars.volume_usd.iloc[0] == pytest.approx(minutes.volume_usd.sum())
    later = sim_market.price_history(
        "Binance", "BTCUSDT", HOUR, bar_start, bar_start + HOUR, NOW_MS + 20 * MINUTE
    )
    assert later.open.iloc[0] == bars.open.iloc[0]
    assert later.volume_usd.iloc[0] > bars.volume_usd.iloc[0]


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("price_history", ("Binance", "BTCUSDT")),
        ("open_interest_history", ("OKX", "BTC-USD-SWAP")),
        ("funding_history", ("Hyperliquid", "DOGE")),
        ("funding_weighted_history", ("ETH", "oi")),
        ("open_interest_aggregated", ("XRP",)),
    ],
)
def test_ohlc_highs_and_lows_bound_open_and_close(sim_market, method, args):
    bars = hourly(sim_market, method, *args)
    assert len(bars) > 900
    assert (bars.high >= np.maximum(bars.open, bars.close)).all()
    assert (bars.low <= np.minimum(bars.open, bars.close)).all()
    assert (bars.open.iloc[1:].to_numpy() == bars.close.iloc[:-1].to_numpy()).all()


@pytest.mark.parametrize("kind", ["global_account", "top_account", "top_position"])
def test_long_short_percentages_are_complementary(sim_market, kind):
    bars = hourly(sim_market, "long_short_history", "Bybit", "ETHUSDT", kind)
    assert bars.long_percent.between(0, 100).all()
    assert np.allclose(bars.long_percent + bars.short_percent, 100.0)
    assert np.allclose(bars.long_short_ratio, bars.long_percent / bars.short_percent)
    assert bars.long_percent.std() > 1.0  # it moves


def test_retail_leans_long_after_drops(sim_market):
    price = hourly(sim_market, "price_history", "Binance", "BTCUSDT", days=55)
    ratio = hourly(
        sim_market, "long_short_history", "Binance", "BTCUSDT", "global_account", days=55
    )
    day_return = np.log(price.close).diff(24)
    assert np.corrcoef(day_return[24:], ratio.long_percent[24:])[0, 1] < -0.2


def test_long_liquidations_dominate_down_bars_and_shorts_up_bars(sim_market):
    price = hourly(sim_market, "price_history", "Binance", "BTCUSDT", days=55)
    liq = hourly(sim_market, "liquidation_history", "Binance", "BTCUSDT", days=55)
    down = (price.close < price.open).to_numpy()
    assert liq.long_liquidation_usd[down].mean() > 1.5 * liq.long_liquidation_usd[~down].mean()
    assert liq.short_liquidation_usd[~down].mean() > 1.5 * liq.short_liquidation_usd[down].mean()


def test_takers_buy_into_up_moves_and_sum_to_the_traded_volume(sim_market):
    price = hourly(sim_market, "price_history", "Bitget", "BTCUSDT_UMCBL")
    taker = hourly(sim_market, "taker_history", "Bitget", "BTCUSDT_UMCBL")
    total = taker.taker_buy_volume_usd + taker.taker_sell_volume_usd
    assert np.allclose(total, price.volume_usd)
    buy_share = taker.taker_buy_volume_usd / total
    assert np.corrcoef(np.log(price.close / price.open), buy_share)[0, 1] > 0.3


def test_funding_is_in_percent_and_follows_momentum(sim_market):
    funding = hourly(sim_market, "funding_history", "Binance", "BTCUSDT", days=55)
    price = hourly(sim_market, "price_history", "Binance", "BTCUSDT", days=55)
    assert funding.close.abs().max() < 0.5
    assert 0.005 < funding.close.std() < 0.1
    day_return = np.log(price.close).diff(24)
    assert np.corrcoef(day_return[24:], funding.close[24:])[0, 1] > 0.3


def test_aggregates_sum_the_exchanges_they_name(sim_market):
    coin_args = ("BTC", ["Binance", "OKX"])
    both = hourly(sim_market, "liquidation_aggregated", *coin_args)
    parts = [hourly(sim_market, "liquidation_aggregated", "BTC", [name]) for name in coin_args[1]]
    summed = parts[0].aggregated_long_liquidation_usd + parts[1].aggregated_long_liquidation_usd
    assert np.allclose(both.aggregated_long_liquidation_usd, summed)
    pairs = sum(
        hourly(sim_market, "liquidation_history", "Binance", pair).long_liquidation_usd
        for pair in ("BTCUSDT", "BTCUSD_PERP", "BTCUSDT_260327")
    )
    assert np.allclose(pairs, parts[0].aggregated_long_liquidation_usd)


def test_oi_weighted_funding_lies_between_the_exchanges_rates(sim_market):
    weighted = hourly(sim_market, "funding_weighted_history", "BTC", "oi", days=5)
    rates = [
        hourly(sim_market, "funding_history", ex, pair, days=5).close
        for ex, pair in [("Binance", "BTCUSDT"), ("OKX", "BTC-USDT-SWAP"), ("Bybit", "BTCUSDT")]
    ]
    hourly_8h_equivalent = hourly(sim_market, "funding_history", "Hyperliquid", "BTC", days=5)
    rates.append(hourly_8h_equivalent.close * 8)
    rates.append(hourly(sim_market, "funding_history", "Bitget", "BTCUSDT_UMCBL", days=5).close)
    stacked = np.vstack(rates)
    assert (weighted.close >= stacked.min(axis=0) - 1e-12).all()
    assert (weighted.close <= stacked.max(axis=0) + 1e-12).all()


def test_instrument_ids_follow_each_exchange_s_conventions(sim_market):
    ids = {ex: [i.instrument_id for i in lst] for ex, lst in sim_market.instruments().items()}
    assert {"BTCUSDT", "BTCUSD_PERP", "BTCUSDT_260327"} <= set(ids["Binance"])
    assert {"BTC-USDT-SWAP", "BTC-USD-SWAP", "BTC-USDT-260327"} <= set(ids["OKX"])
    assert {"BTCUSDT", "BTCUSD"} <= set(ids["Bybit"])
    assert "BTCUSDT_UMCBL" in ids["Bitget"]
    assert "BTC" in ids["Hyperliquid"]
    assert not any(i.startswith("HYPE") for i in ids["OKX"])
    assert "OKX" not in sim_market.listing_exchanges("HYPE")
    hl = sim_market.instrument("Hyperliquid", "BTC")
    assert (hl.quote_asset, hl.funding_interval) == ("USD", 1)
    assert sim_market.instrument("Binance", "BTCUSDT_260327").funding_interval is None


def test_price_levels_are_realistic(sim_market):
    closes = {
        coin: hourly(sim_market, "price_history", "Bybit", f"{coin}USDT", days=1).close.iloc[-1]
        for coin in ("BTC", "ETH", "SOL", "DOGE")
    }
    assert 40_000 < closes["BTC"] < 200_000
    assert 1_000 < closes["ETH"] < 8_000
    assert 40 < closes["SOL"] < 500
    assert 0.05 < closes["DOGE"] < 1.5


def test_an_epoch_off_the_minute_grid_is_rejected():
    with pytest.raises(ValueError, match="minute boundary"):
        SyntheticMarket(epoch_ms=EPOCH_MS + 1)


def test_unlisted_instruments_raise_key_error(sim_market):
    with pytest.raises(KeyError):
        sim_market.instrument("OKX", "HYPE-USDT-SWAP")
