import pytest

from cg_assets.liquidations.gapfill import ORDER_PAGE, REST_HISTORY_MS, fetch_orders, fillable


class FakeOrders:
    """Answers like the order endpoint: up to 200 rows inside [start, end], in a set order."""

    def __init__(self, times: list[int], newest_first: bool) -> None:
        self.times = sorted(times)
        self.newest_first = newest_first
        self.calls = 0

    def __call__(self, path: str, params: dict) -> list[dict]:
        self.calls += 1
        inside = [t for t in self.times if params["start_time"] <= t <= params["end_time"]]
        page = sorted(inside, reverse=self.newest_first)[:ORDER_PAGE]
        return [{"time": t, "id": i} for i, t in enumerate(page)]


@pytest.mark.parametrize("newest_first", [True, False])
@pytest.mark.parametrize("count", [0, 1, 199, 200, 201, 1000, 1234])
def test_every_order_is_fetched_whatever_the_page_order(newest_first: bool, count: int):
    times = [1_000 + 7 * i for i in range(count)]
    get = FakeOrders(times, newest_first)
    rows = fetch_orders(get, "Binance", "BTC", 0, 10**9, 0)
    assert sorted({r["time"] for r in rows}) == times
    assert get.calls <= count // (ORDER_PAGE - 1) + 1


def test_many_orders_in_one_millisecond_do_not_loop_forever():
    get = FakeOrders([5_000] * 450 + [4_000], newest_first=True)
    rows = fetch_orders(get, "Binance", "BTC", 0, 10_000, 0)
    assert {r["time"] for r in rows} == {5_000, 4_000}
    assert get.calls <= 3


def test_min_amount_and_coin_are_passed_through():
    seen = []

    def get(path: str, params: dict) -> list[dict]:
        seen.append((path, params))
        return []

    fetch_orders(get, "OKX", "ETH", 10, 20, 250_000)
    assert seen == [
        (
            "/api/futures/liquidation/order",
            {
                "exchange": "OKX",
                "symbol": "ETH",
                "min_liquidation_amount": "250000",
                "start_time": 10,
                "end_time": 20,
            },
        )
    ]


def test_fillable_clips_to_the_rest_history():
    now = 100 * REST_HISTORY_MS
    assert fillable(now - 10, now, now) == (now - 10, now)
    assert fillable(now - 2 * REST_HISTORY_MS, now - REST_HISTORY_MS + 5, now) == (
        now - REST_HISTORY_MS,
        now - REST_HISTORY_MS + 5,
    )
    assert fillable(0, 10, now) is None
