"""An in-process HTTP server that answers like CoinGlass V4 REST, from a SyntheticMarket.

It reproduces what a client has to cope with (reference §2–5): a string `code` in an envelope
served over HTTP 200 even for errors, a real 404 for unknown paths, HTTP 429 with the two
usage headers, the range and clamping rules of history endpoints, the plan gates, and the
per-endpoint mix of strings and numbers. Faults (latency, 503s, body errors, truncated JSON,
429 storms) can be switched on per instance, or from another process through `/_sim/*`.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from cg_assets.coinglass.plans import PLAN_LIMITS, Plan, min_plan_for_path, parse_plan
from cg_assets.sim.http import (
    LoopbackServer,
    Response,
    faults_endpoint,
    json_response,
    plain_response,
)
from cg_assets.sim.liquidations import LiquidationFeed
from cg_assets.sim.market import SyntheticMarket
from cg_assets.sim.rest_faults import Faults
from cg_assets.sim.rest_request import ApiError, Call, JsonBody
from cg_assets.sim.rest_routes import ROUTES
from cg_assets.sim.ws import WsSimulator
from cg_assets.sim.ws_control import PREFIX as WS_PREFIX
from cg_assets.sim.ws_control import ws_admin

RATE_WINDOW_MS = 60_000
_LOG_CAP = 100_000  # keeps a long-running demo server's request log bounded


@dataclass
class Stats:
    """What reached the router, so tests can assert how a client used the API.

    `requests`, `by_path` and `log` count requests that passed auth, the rate limit and the
    network-level faults; `rate_limited` counts every HTTP 429 sent. The log (and `times`, when
    each of its requests arrived, wall-clock seconds) keeps the newest entries only once it is
    very long.
    """

    requests: int = 0
    rate_limited: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    # Wall-clock seconds of the first and last counted request: how long a client kept the
    # API busy, as the server saw it (benchmarks compare it with the rate-limit floor).
    first_at: float | None = None
    last_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, path: str, params: dict[str, str]) -> None:
        now = time.time()
        with self._lock:
            self.first_at = now if self.first_at is None else self.first_at
            self.last_at = now
            self.requests += 1
            self.by_path[path] += 1
            self.log.append((path, params))
            self.times.append(now)
            if len(self.log) > _LOG_CAP:
                del self.log[: _LOG_CAP // 2]
                del self.times[: _LOG_CAP // 2]

    def record_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def reset(self) -> None:
        """Zero in place, so references held by tests stay live."""
        with self._lock:
            self.requests = 0
            self.rate_limited = 0
            self.by_path.clear()
            self.log.clear()
            self.times.clear()
            self.first_at = self.last_at = None

    def as_dict(self) -> JsonBody:
        with self._lock:
            return {
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "by_path": dict(self.by_path),
                "first_at": self.first_at,
                "last_at": self.last_at,
            }


class _SlidingWindow:
    """Per-bucket request times within the last minute (the real window type is undocumented)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[int]] = {}
        self._lock = threading.Lock()

    def _prune(self, bucket: str, now: int) -> deque[int]:
        hits = self._hits.setdefault(bucket, deque())
        while hits and hits[0] <= now - RATE_WINDOW_MS:
            hits.popleft()
        return hits

    def usage(self, bucket: str, now: int) -> int:
        with self._lock:
            return len(self._prune(bucket, now))

    def acquire(self, bucket: str, now: int, limit: int) -> tuple[bool, int]:
        """(admitted, usage after this request); a rejected request is not counted."""
        with self._lock:
            hits = self._prune(bucket, now)
            if len(hits) >= limit:
                return False, len(hits)
            hits.append(now)
            return True, len(hits)


# --------------------------------------------------------------------------- HTTP plumbing


def _envelope_error(code: str, msg: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(200, {"code": code, "msg": msg}, headers)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SimulatorServer(LoopbackServer):
    """CoinGlass V4 REST on a local ephemeral port, served from a SyntheticMarket.

    Keys: when `keys` (API key -> plan name) is given only those keys are valid and any other
    key gets code 400 "Invalid API key provided"; when it is None any non-blank key is served
    at `plan`. A request without a key gets code 401 "API key missing." when `require_key`,
    otherwise it is served at `plan` and rate-limited as "anonymous". The limit per minute is
    the plan's unless `rate_limit_per_min` overrides it for every key; every response past
    authentication (429s, body errors and 404s included) carries the usage headers, while key
    errors, 405s and injected 503s have no usage to report. `clock` returns milliseconds;
    injecting one makes "now", ranges and the rate window deterministic.

    `feed` serves `liquidation/order`; share it with a WsSimulator so both protocols report
    the same events, and give it the server's clock, since the 7-day window is the server's.
    Without one, a feed on the server's market and clock is created on the first order
    request (so it holds only events generated from then on). With `ws`, the `/_sim/ws/*`
    routes control that WebSocket simulator from other processes (`cg_assets.sim.ws_control`).
    """

    label = "the simulator"

    def __init__(
        self,
        market: SyntheticMarket | None = None,
        *,
        plan: str = "professional",
        keys: Mapping[str, str] | None = None,
        require_key: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], int] | None = None,
        rate_limit_per_min: int | None = None,
        fault_seed: int = 0,
        feed: LiquidationFeed | None = None,
        ws: WsSimulator | None = None,
    ) -> None:
        self.market = market or SyntheticMarket()
        self.ws = ws
        self._feed = feed
        self._feed_lock = threading.Lock()
        self.plan = parse_plan(plan)
        self.keys = None if keys is None else {k: parse_plan(v) for k, v in keys.items()}
        self.require_key = require_key
        self.rate_limit_per_min = rate_limit_per_min
        self.clock = clock or _wall_clock_ms
        self.faults = Faults(seed=fault_seed)
        self.stats = Stats()
        self._limiter = _SlidingWindow()
        super().__init__(host, port)

    def reset_stats(self) -> None:
        self.stats.reset()

    @property
    def feed(self) -> LiquidationFeed:
        with self._feed_lock:
            if self._feed is None:
                self._feed = LiquidationFeed(self.market, clock=self.clock)
            return self._feed

    # ------------------------------------------------------------------ request handling

    def handle_http(self, method: str, target: str, headers: Message, body: bytes) -> Response:
        return self.handle(method, target, headers.get("CG-API-KEY", ""), body)

    def handle(self, method: str, target: str, api_key: str = "", body: bytes = b"") -> Response:
        """Answer one HTTP request; the socket layer only moves bytes."""
        url = urlsplit(target)
        params = dict(reversed(parse_qsl(url.query, keep_blank_values=True)))  # first wins
        if url.path.startswith("/_sim/"):
            return self._admin(method, url.path, params, body)
        if method != "GET":
            return plain_response(405, "Method Not Allowed", {"Allow": "GET"})
        if self.faults.latency_s > 0:
            time.sleep(self.faults.latency_s)
        if self.faults.hit(self.faults.error_5xx_rate):
            return plain_response(503, "Service Temporarily Unavailable")
        return self._api(url.path, params, api_key.strip())

    def _identify(self, api_key: str) -> tuple[str, Plan] | ApiError:
        """(rate-limit bucket, plan) for the key, or the error CoinGlass gives for it."""
        if not api_key:
            if self.require_key:
                return ApiError("401", "API key missing.")
            return "anonymous", self.plan
        if self.keys is None:
            return api_key, self.plan
        if api_key in self.keys:
            return api_key, self.keys[api_key]
        return ApiError("400", "Invalid API key provided")

    def _limit(self, plan: Plan) -> int:
        return self.rate_limit_per_min or PLAN_LIMITS[plan].requests_per_minute

    def _api(self, path: str, params: dict[str, str], api_key: str) -> Response:
        now = self.clock()
        identity = self._identify(api_key)
        if isinstance(identity, ApiError):
            return _envelope_error(identity.code, identity.msg)
        bucket, plan = identity
        limit = self._limit(plan)
        if self.faults.take_storm():
            admitted, used = False, self._limiter.usage(bucket, now)
        else:
            admitted, used = self._limiter.acquire(bucket, now, limit)
        headers = {"API-KEY-MAX-LIMIT": str(limit), "API-KEY-USE-LIMIT": str(used)}
        if not admitted:
            self.stats.record_rate_limited()
            return json_response(429, {"code": "429", "msg": "Too Many Requests"}, headers)
        self.stats.record(path, params)
        if self.faults.hit(self.faults.body_500_rate):
            return _envelope_error("500", "Server Error", headers)
        response = self._route(
            path, Call(self.market, params, plan, now, lambda: self.feed), headers
        )
        if self.faults.hit(self.faults.malformed_json_rate):
            return Response(response.status, response.body[: len(response.body) // 2], headers)
        return response

    def _route(self, path: str, call: Call, headers: dict[str, str]) -> Response:
        if min_plan_for_path(path).rank > call.plan.rank:
            return _envelope_error("401", "Upgrade plan", headers)
        route = ROUTES.get(path)
        if route is None:
            return plain_response(404, "Not Found", headers)
        try:
            data = route(call)
        except ApiError as exc:
            return _envelope_error(exc.code, exc.msg, headers)
        return json_response(200, {"code": "0", "msg": "success", "data": data}, headers)

    def _admin(self, method: str, path: str, params: dict[str, str], body: bytes) -> Response:
        """Out-of-process control: `POST /_sim/faults` (JSON knobs), `GET /_sim/stats`,
        `POST /_sim/liquidation` (one order now: {"coin", "usd", "side"?, "exchange"?}, answered
        with the order as generated, so a benchmark knows when it entered the feed),
        `GET /_sim/feed/events` (every event of a window, `feed_events`) and `/_sim/ws/*`."""
        if path.startswith(WS_PREFIX) and self.ws is not None:
            return ws_admin(self.ws, method, path, body)
        if path == "/_sim/faults" and method in ("GET", "POST"):
            return faults_endpoint(self.faults, method, body)
        if path == "/_sim/stats" and method == "GET":
            return json_response(200, self.stats.as_dict())
        if path == "/_sim/stats/reset" and method == "POST":
            self.reset_stats()
            return json_response(200, self.stats.as_dict())
        if path == "/_sim/liquidation" and method == "POST":
            return self._inject(body)
        if path == "/_sim/feed/events" and method == "GET":
            try:
                return json_response(200, feed_events(self.feed, params))
            except ValueError as exc:
                return json_response(400, {"error": str(exc)})
        return plain_response(404, "Not Found")

    def _inject(self, body: bytes) -> Response:
        try:
            order = json.loads(body or b"{}")
            if not isinstance(order, dict) or "coin" not in order or "usd" not in order:
                raise ValueError('expected {"coin": ..., "usd": ...}')
            [event] = self.feed.burst(
                str(order["coin"]),
                float(order["usd"]),
                1,
                side=order.get("side"),
                exchange=order.get("exchange"),
            )
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, dataclasses.asdict(event))


def feed_events(feed: LiquidationFeed, params: Mapping[str, str]) -> JsonBody:
    """Every event of the feed with `start_ms <= time < end_ms`, optionally only of the
    comma-separated `coins` and `exchanges`, as columns (exchange, pair, time, price, side,
    usd_value): what a soak compares with what the consumer stored.

    The feed generates lazily, so the window is first brought up to now, and it is answered
    only as far as it is complete: `end_ms` in the answer is where the caller asks from next.
    Found by the soak: the window it asked right after its load phase ended a few
    milliseconds after the feed's last push, so events generated afterwards, inside the
    window, were stored yet missing from the list, and counted as stored copies of no event."""
    try:
        start, end = int(params["start_ms"]), int(params["end_ms"])
    except (KeyError, ValueError):
        raise ValueError("start_ms and end_ms must be integer milliseconds") from None
    feed.advance()
    end = max(start, min(end, feed.generated_to_ms + 1))
    batch = feed.query(start, end)
    wanted = [
        (not params.get("coins") or inst.base_asset in params["coins"].split(","))
        and (not params.get("exchanges") or inst.exchange in params["exchanges"].split(","))
        for inst in feed.instruments
    ]
    batch = batch.take(np.array(wanted, dtype=bool)[batch.inst])
    return {
        "end_ms": end,
        "exchange": batch.exchanges(),
        "pair": batch.pairs(),
        "time": batch.time.tolist(),
        "price": batch.price.tolist(),
        "side": ["long" if long_ else "short" for long_ in batch.long.tolist()],
        "usd_value": batch.usd_value.tolist(),
    }
