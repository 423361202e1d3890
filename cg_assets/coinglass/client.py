"""CoinGlass V4 REST client: envelope checks, typed errors, retries, pacing and pagination.

Plain `requests` and no Dagster, so the same code runs in assets, sensors, scripts and tests,
against the real API and the local simulator alike (only the base URL differs).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from cg_assets.coinglass.errors import (
    MASK,
    CoinGlassError,
    CoinGlassProtocolError,
    CoinGlassRateLimited,
    CoinGlassServerError,
    CoinGlassTimeout,
    PairNotListedError,
    classify,
)
from cg_assets.coinglass.pagination import merge_bars, windows
from cg_assets.coinglass.plans import PLAN_LIMITS, Plan, interval_ms, parse_plan
from cg_assets.coinglass.ratelimit import RateLimiter, shared_limiter
from cg_assets.coinglass.slots import SlotStore

logger = logging.getLogger("cg_assets.coinglass")

EXCHANGE_PAIRS_PATH = "/api/futures/supported-exchange-pairs"
PAGE_LIMIT = 1000
POOL_SIZE = 32

_NUMBER = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")
# Expiry tokens of dated futures: YYMMDD (BTCUSDT_250627, BTC-USDT-260327) or DDMMMYY
# (Deribit's BTC-27MAR26).
_YYMMDD = re.compile(r"(?<!\d)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_DDMMMYY = re.compile(r"(?<![A-Z0-9])\d{1,2}(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)\d{2}")
_PERP_MARKERS = ("SWAP", "PERP", "UMCBL")


def coerce_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with numeric strings and ints as float and `time` as int ms.

    CoinGlass sends the same field as a string on one endpoint and a number on another, even
    within one row (reference §7.2), so every value that reads as a number is normalised;
    other strings (exchange, symbol), None and booleans are left alone.
    """
    return {key: _coerce(key, value) for key, value in row.items()}


def _coerce(key: str, value: Any) -> Any:
    if key == "time":
        return int(value) if isinstance(value, int) else int(float(value))
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value)
    return value


def pick_perpetual(coin: str, exchange: str, instruments: list[Mapping[str, Any]]) -> str:
    """The instrument id of `coin`'s USDT-margined perpetual among `exchange`'s instruments.

    Uncertain by nature: supported-exchange-pairs has no "perpetual" flag (reference §5.8), so
    this drops ids that carry an expiry date and prefers perpetual-looking names
    (SWAP/PERP/UMCBL or plain COINUSDT), then the shortest id. CG_PAIR_OVERRIDES exists for
    the exchanges where this guess is wrong.
    """
    of_coin = [i for i in instruments if i.get("base_asset") == coin]
    usdt = [str(i["instrument_id"]) for i in of_coin if i.get("quote_asset") == "USDT"]
    perpetual = [iid for iid in usdt if not _is_dated(iid, coin)]
    if not perpetual:
        raise PairNotListedError(coin, exchange, _not_listed_reason(coin, exchange, of_coin))
    plain = f"{coin}USDT"
    return min(
        perpetual,
        key=lambda iid: (not (iid == plain or any(m in iid for m in _PERP_MARKERS)), len(iid), iid),
    )


def _is_dated(instrument_id: str, coin: str) -> bool:
    rest = instrument_id.upper().replace(coin.upper(), "", 1)
    return bool(_YYMMDD.search(rest) or _DDMMMYY.search(rest))


def _not_listed_reason(coin: str, exchange: str, of_coin: list[Mapping[str, Any]]) -> str:
    if not of_coin:
        return f"{exchange} lists no {coin} instruments"
    ids = ", ".join(sorted(str(i["instrument_id"]) for i in of_coin)[:10])
    return f"{exchange} lists {coin} only as {ids}"


@dataclass
class ClientStats:
    """Counters for one client, safe to update from many threads."""

    requests: int = 0
    retries: int = 0
    http_429: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_request(self, path: str) -> None:
        with self._lock:
            self.requests += 1
            self.by_path[path] += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def record_429(self) -> None:
        with self._lock:
            self.http_429 += 1


class CoinGlassClient:
    """A CoinGlass V4 client that is safe to share between threads.

    All clients of one process built for the same base URL, key and rate share one rate
    limiter, so parallel ops cannot jointly exceed the key's limit. `limiter` replaces it (tests
    pass one with a fake clock).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        plan: Plan | str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        max_retry_seconds: float = 120.0,
        rate_limit_per_min: int | None = None,
        rate_safety: float = 0.95,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        limiter: RateLimiter | None = None,
        slot_store: SlotStore | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.base_url = base_url.rstrip("/")
        self.plan = parse_plan(plan)
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._api_key = api_key or None
        rate = rate_limit_per_min or PLAN_LIMITS[self.plan].requests_per_minute
        self.limiter = limiter or shared_limiter(
            self.base_url, self._api_key, rate, rate_safety, slot_store
        )
        self.stats = ClientStats()
        self._session = self._new_session()
        self._pairs: dict[str, list[dict[str, Any]]] | None = None
        self._pairs_lock = threading.Lock()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # Retries are ours (they must go through the limiter); pool >= the ops' thread count.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["accept"] = "application/json"
        if self._api_key:
            session.headers["CG-API-KEY"] = self._api_key
        return session

    def __repr__(self) -> str:
        return f"CoinGlassClient({self.base_url!r}, plan={self.plan.value!r})"

    # -- requests --------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """The `data` of a successful envelope, retrying transient failures.

        Raises the typed CoinGlassError subclass; transient ones only once `max_attempts` or
        `max_retry_seconds` is used up. Numbers are returned as the server sent them.
        """
        query = self._query(params)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(path, query)
            except CoinGlassError as exc:
                if not exc.transient:
                    raise
                delay = self._retry_delay(attempt, exc)
                elapsed = time.monotonic() - started
                if attempt >= self.max_attempts or elapsed + delay > self.max_retry_seconds:
                    raise exc.gave_up(attempt, elapsed) from None
                self._before_retry(path, attempt, delay, exc)

    def _query(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """`params` as a dict, refusing the API key as a value: query strings get logged."""
        query = dict(params or {})
        if self._api_key and any(str(v) == self._api_key for v in query.values()):
            raise ValueError(
                "the API key must not be a query parameter (URLs end up in logs); "
                "the client already sends it in the CG-API-KEY header"
            )
        return query

    def _attempt(self, path: str, params: dict[str, Any]) -> Any:
        self.limiter.acquire()
        self.stats.record_request(path)
        try:
            response = self._session.get(
                self.base_url + path, params=params, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            failure = self._network_error(exc, path, params)
        else:
            with response:
                self._observe_usage(response.headers)
                return self._unwrap(response, path, params)
        # Raised outside the except block so the error holds no reference to the request
        # (whose headers carry the key).
        raise failure

    def _network_error(
        self, exc: requests.RequestException, path: str, params: dict[str, Any]
    ) -> CoinGlassError:
        if isinstance(exc, requests.Timeout):
            return CoinGlassTimeout(None, f"no response within {self.timeout_s:g} s", path, params)
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        return CoinGlassServerError(None, f"connection failed: {detail}", path, params)

    def _observe_usage(self, headers: Mapping[str, str]) -> None:
        use = _int_header(headers, "API-KEY-USE-LIMIT")
        limit = _int_header(headers, "API-KEY-MAX-LIMIT")
        self.limiter.observe(use, limit)

    def _unwrap(self, response: requests.Response, path: str, params: dict[str, Any]) -> Any:
        status = response.status_code
        if status == 429:
            self.stats.record_429()
            retry_after = _retry_after_s(response.headers.get("Retry-After"))
            raise CoinGlassRateLimited(
                "429", "rate limit exceeded (HTTP 429)", path, params, retry_after
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        envelope = isinstance(body, dict) and "code" in body
        if status != 200:
            msg = str(body.get("msg") or "") if envelope else ""
            raise classify(
                str(status),
                self._scrub(msg or f"HTTP {status} {response.reason}"),
                path,
                params,
                self.plan,
            )
        if not envelope:
            what = "malformed JSON" if body is None else f"no envelope: {type(body).__name__}"
            raise CoinGlassProtocolError(None, f"unexpected response ({what})", path, params)
        code = str(body["code"])
        if code == "0":
            return body.get("data")
        raise classify(code, self._scrub(str(body.get("msg") or "")), path, params, self.plan)

    def _retry_delay(self, attempt: int, exc: CoinGlassError) -> float:
        """Full-jitter exponential backoff, or the server's Retry-After when it gave one."""
        if isinstance(exc, CoinGlassRateLimited) and exc.retry_after_s is not None:
            return exc.retry_after_s
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def _before_retry(self, path: str, attempt: int, delay: float, exc: CoinGlassError) -> None:
        logger.warning(
            "CoinGlass %s attempt %d/%d failed (%s); retrying in %.2f s",
            path,
            attempt,
            self.max_attempts,
            exc.explanation(),
            delay,
        )
        self.stats.record_retry()
        if isinstance(exc, CoinGlassRateLimited):
            # The window is full for every thread using this key, not only this one.
            self.limiter.penalize(delay)
        else:
            time.sleep(delay)

    def _scrub(self, text: str) -> str:
        """`text` with the API key masked, in case a server or proxy ever echoes it."""
        return text.replace(self._api_key, MASK) if self._api_key else text

    # -- history ---------------------------------------------------------------------------

    def history(
        self,
        path: str,
        params: Mapping[str, Any],
        interval: str,
        start_ms: int,
        end_ms: int,
    ) -> list[dict[str, Any]]:
        """Exactly the bars of [start_ms, end_ms), ascending, one per time, numbers coerced.

        One request per window of `interval x 1000` bars; the server clamps a start older than
        the plan's depth, so a range beyond it simply returns fewer bars.
        """
        pages: list[list[dict[str, Any]]] = []
        for lo, hi in windows(start_ms, end_ms, interval_ms(interval), PAGE_LIMIT):
            query = {
                **params,
                "interval": interval,
                "start_time": lo,
                "end_time": hi,
                "limit": PAGE_LIMIT,
            }
            data = self.get(path, query)
            if data is None:
                data = []
            if not isinstance(data, list):
                raise CoinGlassProtocolError(
                    None, f"expected a list of bars, got {type(data).__name__}", path, query
                )
            pages.append([coerce_row(row) for row in data])
        return merge_bars(pages, start_ms, end_ms)

    # -- instruments -----------------------------------------------------------------------

    def exchange_pairs(self) -> dict[str, list[dict[str, Any]]]:
        """Every exchange's instruments, fetched once per client (they change rarely).

        The cached dict is shared by all callers: read it, do not modify it.
        """
        with self._pairs_lock:
            if self._pairs is None:
                data = self.get(EXCHANGE_PAIRS_PATH)
                if not isinstance(data, dict):
                    raise CoinGlassProtocolError(
                        None,
                        f"expected an object of exchanges, got {type(data).__name__}",
                        EXCHANGE_PAIRS_PATH,
                    )
                self._pairs = data
            return self._pairs

    def resolve_pair(
        self,
        coin: str,
        exchange: str,
        overrides: Mapping[tuple[str, str], str] | None = None,
    ) -> str:
        """`exchange`'s instrument id for `coin`'s USDT-margined perpetual.

        `overrides` maps (exchange, coin) to an instrument id, the shape of
        `Settings.pair_overrides`; a hit skips the lookup entirely.
        """
        if overrides and (exchange, coin) in overrides:
            return overrides[(exchange, coin)]
        pairs = self.exchange_pairs()
        if exchange not in pairs:
            raise PairNotListedError(coin, exchange, _unknown_exchange_reason(exchange, pairs))
        return pick_perpetual(coin, exchange, pairs[exchange])

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CoinGlassClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _unknown_exchange_reason(exchange: str, pairs: Mapping[str, Any]) -> str:
    near = [name for name in pairs if name.lower() == exchange.lower()]
    hint = f"; exchange names are case-sensitive, did you mean {near[0]!r}?" if near else ""
    known = ", ".join(sorted(pairs))
    return f"exchange {exchange!r} is not in supported-exchange-pairs{hint} (known: {known})"


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
