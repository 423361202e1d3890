"""Perpetual selection on data shaped like supported-exchange-pairs (reference §5.8)."""

from __future__ import annotations

import pytest

from cg_assets.coinglass.client import pick_perpetual
from cg_assets.coinglass.errors import PairNotListedError


def inst(instrument_id: str, base: str, quote: str) -> dict[str, str]:
    return {"instrument_id": instrument_id, "base_asset": base, "quote_asset": quote}


PAIRS = {
    "Binance": [
        inst("BTCUSDT_250627", "BTC", "USDT"),
        inst("BTCUSD_PERP", "BTC", "USD"),
        inst("BTCUSDT", "BTC", "USDT"),
        inst("1000000MOGUSDT", "1000000MOG", "USDT"),
        inst("ETHUSDC", "ETH", "USDC"),
    ],
    "OKX": [
        inst("BTC-USDT-260327", "BTC", "USDT"),
        inst("BTC-USD-SWAP", "BTC", "USD"),
        inst("BTC-USDT-SWAP", "BTC", "USDT"),
        inst("BTC-USDT", "BTC", "USDT"),
    ],
    "Bitget": [inst("BTCUSDT_UMCBL", "BTC", "USDT")],
    "Deribit": [inst("BTC_USDT-27MAR26", "BTC", "USDT"), inst("BTC_USDT-PERPETUAL", "BTC", "USDT")],
    "Bybit": [inst("BTCUSDT-26JUN26", "BTC", "USDT")],
}


@pytest.mark.parametrize(
    ("exchange", "coin", "expected"),
    [
        ("Binance", "BTC", "BTCUSDT"),
        ("OKX", "BTC", "BTC-USDT-SWAP"),
        ("Bitget", "BTC", "BTCUSDT_UMCBL"),
        ("Deribit", "BTC", "BTC_USDT-PERPETUAL"),
        ("Binance", "1000000MOG", "1000000MOGUSDT"),
    ],
)
def test_picks_the_usdt_perpetual(exchange, coin, expected):
    assert pick_perpetual(coin, exchange, PAIRS[exchange]) == expected


def test_only_other_quotes_names_them():
    with pytest.raises(PairNotListedError, match=r"Binance lists ETH only as ETHUSDC") as info:
        pick_perpetual("ETH", "Binance", PAIRS["Binance"])
    assert (info.value.coin, info.value.exchange) == ("ETH", "Binance")


def test_only_dated_futures_is_not_a_perpetual():
    with pytest.raises(PairNotListedError, match="only as BTCUSDT-26JUN26"):
        pick_perpetual("BTC", "Bybit", PAIRS["Bybit"])


def test_unlisted_coin():
    with pytest.raises(PairNotListedError, match="OKX lists no HYPE instruments"):
        pick_perpetual("HYPE", "OKX", PAIRS["OKX"])
