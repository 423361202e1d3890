"""Turn market asset specs into CoinGlass requests and the answers into typed Arrow tables.

Kept free of Dagster so the request plan (which series, which parameters, how many HTTP calls)
and the shaping of rows can be tested directly and reused by the benchmark.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from cg_assets.market.series import Endpoint, MarketAsset, Scope


class MarketDataError(ValueError):
    """CoinGlass answered with a bar we cannot store; names the series, field and value."""


@dataclass(frozen=True, eq=False)
class SeriesRequest:
    """One series of one asset: a single endpoint for one coin (and exchange, for pairs)."""

    asset: MarketAsset
    endpoint: Endpoint
    symbol: str
    exchange: str | None = None
    pair: str | None = None
    exchange_list: str | None = None

    @property
    def params(self) -> dict[str, str]:
        params = dict(self.endpoint.params)
        if self.endpoint.scope is Scope.PAIR:
            params.update(exchange=str(self.exchange), symbol=str(self.pair))
        else:
            params["symbol"] = self.symbol
        if self.endpoint.scope is Scope.COIN_EXCHANGES:
            params["exchange_list"] = str(self.exchange_list)
        return params

    @property
    def constants(self) -> dict[str, str | None]:
        values: dict[str, str | None] = {"symbol": self.symbol, **self.endpoint.constants}
        if self.endpoint.scope is Scope.PAIR:
            values.update(exchange=self.exchange, pair=self.pair)
        return values

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.endpoint.path} ({args})"


def plan_requests(
    assets: Iterable[MarketAsset],
    symbols: Sequence[str],
    exchanges: Sequence[str],
    resolve_pair: Callable[[str, str], str],
) -> list[SeriesRequest]:
    """Every series the selected assets need; pairs are resolved once per (coin, exchange)."""
    pairs: dict[tuple[str, str], str] = {}

    def pair(symbol: str, exchange: str) -> str:
        if (symbol, exchange) not in pairs:
            pairs[(symbol, exchange)] = resolve_pair(symbol, exchange)
        return pairs[(symbol, exchange)]

    requests: list[SeriesRequest] = []
    for asset in assets:
        for endpoint in asset.endpoints:
            for symbol in symbols:
                if endpoint.scope is Scope.PAIR:
                    requests.extend(
                        SeriesRequest(asset, endpoint, symbol, ex, pair(symbol, ex))
                        for ex in exchanges
                    )
                elif endpoint.scope is Scope.COIN_EXCHANGES:
                    requests.append(
                        SeriesRequest(asset, endpoint, symbol, exchange_list=",".join(exchanges))
                    )
                else:
                    requests.append(SeriesRequest(asset, endpoint, symbol))
    return requests


def minimum_requests(n_series: int, start_ms: int, end_ms: int, interval_ms: int) -> int:
    """The fewest HTTP calls the API allows: ceil(bars / 1000) per series."""
    bars = max(0, math.ceil((end_ms - start_ms) / interval_ms))
    return n_series * math.ceil(bars / 1000)


def rows_to_table(
    asset: MarketAsset, fetched: Sequence[tuple[SeriesRequest, list[dict]]]
) -> pa.Table:
    """Shape fetched bars into the asset's Arrow schema, column by column.

    A bar lacking a mapped field, or carrying a non-numeric value, raises MarketDataError naming
    the series, bar, field and value instead of storing a silent null.
    """
    columns: dict[str, list[Any]] = {c.name: [] for c in asset.columns}
    for request, rows in fetched:
        for column, value in request.constants.items():
            columns[column].extend([value] * len(rows))
        columns["ts"].extend(row["time"] for row in rows)
        for field, column in request.endpoint.fields.items():
            columns[column].extend(_numbers(request, rows, field))
    arrays = [pa.array(columns[f.name], type=f.type) for f in asset.schema]
    return pa.Table.from_arrays(arrays, schema=asset.schema)


def _numbers(request: SeriesRequest, rows: list[dict], field: str) -> list[float]:
    values: list[float] = []
    for row in rows:
        value = row.get(field)
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            bar = datetime.fromtimestamp(row.get("time", 0) / 1000, UTC).isoformat()
            raise MarketDataError(
                f"{request.describe()}: bar {bar} has {field}={value!r}; expected a number"
            )
        values.append(float(value))
    return values


def fetch_by_asset(
    history: Callable[[str, dict[str, str]], list[dict]],
    requests: Sequence[SeriesRequest],
    workers: int = 8,
) -> Iterator[tuple[MarketAsset, list[tuple[SeriesRequest, list[dict]]]]]:
    """Fetch every series concurrently and hand back each asset as soon as it is complete.

    The client's rate limiter, shared by the threads, paces the calls; yielding per asset lets
    the caller write Parquet while the remaining series are still in flight, so a long backfill
    stays bound by the API's rate rather than by rate plus write time.
    """
    remaining = Counter(r.asset.name for r in requests)
    done: dict[str, list[tuple[SeriesRequest, list[dict]]]] = defaultdict(list)
    order = {r: i for i, r in enumerate(requests)}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coinglass")
    try:
        futures = {pool.submit(history, r.endpoint.path, r.params): r for r in requests}
        for future in as_completed(futures):
            request = futures[future]
            done[request.asset.name].append((request, future.result()))
            remaining[request.asset.name] -= 1
            if remaining[request.asset.name] == 0:
                fetched = sorted(done.pop(request.asset.name), key=lambda item: order[item[0]])
                yield request.asset, fetched
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
