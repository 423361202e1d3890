"""CoinGlass V4 WebSocket (reference §6) on a local port, pushing a LiquidationFeed.

What a client has to cope with: the key in the query string, subscription by JSON message
with no acknowledgement, plain-text `ping`/`pong` keepalive, two channel names with two payload
styles (`liquidationOrders` camelCase, `liquidation_orders` snake_case; both with side 1 = long
liquidated, 2 = short liquidated), and batches of events per frame. Faults that a long-running
consumer meets in production can be switched on per instance at runtime: server-side closes,
unanswered pings, malformed frames, poisoned timestamps, a stalled socket and a restart on
the same port.

The server runs its own asyncio loop in a background thread, so synchronous tests, the CLI and
benchmarks can drive it. Every `push_interval_s` it advances the feed and queues the new
events to each subscribed connection in frames of at most `max_batch` items; each connection
has its own sender task, so a slow consumer delays only itself (its frames wait in memory).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from cg_assets.coinglass.plans import parse_plan
from cg_assets.sim.liquidation_events import EventBatch
from cg_assets.sim.liquidations import LiquidationFeed
from cg_assets.sim.ws_protocol import CHANNELS, MALFORMED_KINDS, break_frame, dumps, parse_request
from cg_assets.sim.ws_stats import SentFrame, WsStats

PATH = "/ws-api"
T = TypeVar("T")


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class _Frame:
    """One text message queued for a connection; `seq`/`time` are the events it carries."""

    text: str
    channel: str
    seq: np.ndarray
    time: np.ndarray
    malformed: bool = False
    poisoned: int = 0  # events sent with a poisoned timestamp, not in `seq`/`time`


_PONG = _Frame("pong", "", np.empty(0, np.int64), np.empty(0, np.int64))


# --------------------------------------------------------------------------- faults


class WsFaults:
    """Runtime-switchable misbehaviour of one WsSimulator.

    Knobs: `answer_pings` (False: plain-text pings go unanswered; protocol-level pings are
    answered by the websockets library regardless), `malformed_rate` (fraction of push frames
    sent broken, drawn from a seeded RNG; their events are lost), `stall` (True: the server
    stops reading and sending on every connection, new ones included, so not even protocol
    pongs go out, while sockets stay open; events generated meanwhile are dropped, frames
    already queued go out on recovery). Actions: `close_connections()`, `restart()` and
    `poison_next(n)`: the next n events pushed carry their time in microseconds, as from a feed
    whose clock unit changed; a consumer must refuse them, so they count in `poisoned_events`,
    not `events_sent` (REST keeps their true copy); `send_poison(kind)` pushes one extra
    item, a broken copy of the newest event (POISON_KINDS), leaving the feed untouched.
    `update`/`as_dict` expose the knobs to `POST /_sim/ws/faults` (`cg_assets.sim.ws_control`).
    """

    def __init__(self, sim: WsSimulator, seed: int = 0) -> None:
        self._sim = sim
        self._rng = random.Random(seed)
        self.answer_pings = True
        self._malformed_rate = 0.0
        self._stall = False
        self._poison = 0
        self._poison_lock = threading.Lock()  # set by tests' threads, taken by the loop's

    @property
    def malformed_rate(self) -> float:
        return self._malformed_rate

    @malformed_rate.setter
    def malformed_rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"malformed_rate must be within [0, 1], got {value!r}")
        self._malformed_rate = float(value)

    @property
    def stall(self) -> bool:
        return self._stall

    @stall.setter
    def stall(self, value: bool) -> None:
        self._stall = bool(value)
        self._sim._apply_stall()

    def malformed_kind(self) -> str | None:
        """Which way to break the next frame, or None to send it intact."""
        if self._malformed_rate <= 0 or self._rng.random() >= self._malformed_rate:
            return None
        return self._rng.choice(MALFORMED_KINDS)

    def poison_next(self, count: int = 1) -> None:
        """Send the next `count` events with microsecond timestamps."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        with self._poison_lock:
            self._poison += count

    def take_poison(self, available: int) -> int:
        """How many of the next `available` events to poison (and that many fewer to come)."""
        with self._poison_lock:
            taken = min(self._poison, available)
            self._poison -= taken
        return taken

    def close_connections(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "simulated disconnect"
    ) -> int:
        """Close every open connection from the server side now; returns how many."""
        return self._sim._close_all(code, reason)

    def restart(self) -> None:
        """Stop (closing every connection with 1001) and serve again on the same port."""
        self._sim.restart()

    def send_poison(self, kind: str) -> int:
        """Push one broken copy of the newest event to every subscriber; how many frames."""
        if kind not in POISON_KINDS:
            raise ValueError(f"unknown poison {kind!r}; known: {', '.join(POISON_KINDS)}")
        return self._sim._poison_all(kind)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several knobs at once, all or none; ValueError names a bad knob or value."""
        for name, value in values.items():
            _check_knob(name, value)
        for name, value in values.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _KNOBS}

    def clear(self) -> None:
        """Switch every fault off."""
        self.answer_pings = True
        self.malformed_rate = 0.0
        self.take_poison(self._poison)
        self.stall = False


_KNOBS = ("answer_pings", "malformed_rate", "stall")
# How `send_poison` breaks its copy: a time in microseconds (a feed whose clock unit changed),
# or a negative price.
POISON_KINDS = ("microseconds", "negative_price")


def _check_knob(name: str, value: Any) -> None:
    if name not in _KNOBS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(_KNOBS)}")
    if name == "malformed_rate":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"malformed_rate must be within [0, 1], got {value!r}")
    elif not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def poison_item(item: dict[str, Any], kind: str) -> dict[str, Any]:
    """A copy of a pushed item broken the `kind` way (POISON_KINDS)."""
    if kind == "microseconds":
        return {**item, "time": item["time"] * 1000}
    return {**item, "price": -abs(item["price"])}


# --------------------------------------------------------------------------- server


@dataclass(eq=False)
class _Client:
    """One accepted connection: its subscriptions and the frames waiting to go out to it."""

    id: int
    conn: ServerConnection
    channels: set[str] = field(default_factory=set)
    queue: asyncio.Queue[_Frame] = field(default_factory=asyncio.Queue)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class WsSimulator:
    """CoinGlass V4 WebSocket on `host:port` (0 picks a free port, kept across restarts).

    Keys, as on the REST simulator: with `keys` (API key -> plan name) only those keys are
    valid; with None any non-blank key is served at `plan`. A connection without a key is
    served at `plan` unless `require_key`. WebSocket needs Standard or above (reference §3).
    How the real server refuses a key is undocumented; here the handshake succeeds and the
    server closes at once with 1008 (policy violation) and the REST message as the reason:
    "API key missing.", "Invalid API key provided" or "Upgrade plan".
    """

    def __init__(
        self,
        feed: LiquidationFeed,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        plan: str = "professional",
        keys: Mapping[str, str] | None = None,
        require_key: bool = True,
        push_interval_s: float = 0.05,
        max_batch: int = 250,
        record_sent: bool = False,
        fault_seed: int = 0,
    ) -> None:
        self.feed = feed
        self.host = host
        self.port = port
        self.plan = parse_plan(plan)
        self.keys = None if keys is None else {k: parse_plan(v) for k, v in keys.items()}
        self.require_key = require_key
        self.push_interval_s = push_interval_s
        self.max_batch = max_batch
        self.record_sent = record_sent
        self.faults = WsFaults(self, fault_seed)
        self.stats = WsStats()
        self._ids = itertools.count(1)
        self._clients: set[_Client] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._unstalled: asyncio.Event | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._thread is None:
            raise RuntimeError("the WebSocket simulator is not running; call start() first")
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    def start(self) -> WsSimulator:
        """Serve in a background thread; returns once the port accepts connections."""
        if self._thread is not None:
            return self
        started = threading.Event()
        failure: list[Exception] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(started))
            except Exception as exc:  # a failure to bind is re-raised by start()
                failure.append(exc)
                started.set()

        self._thread = threading.Thread(target=run, name="cg-sim-ws", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every connection (1001 going away) and stop serving."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join()

    def restart(self) -> None:
        """Stop and start on the same port; for a longer outage call stop() and start()."""
        self.stop()
        self.start()

    def __enter__(self) -> WsSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        self.stats.reset()

    async def _serve(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._unstalled = asyncio.Event()
        if not self.faults.stall:
            self._unstalled.set()
        server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=_check_path,
            compression=None,  # deflating 50,000 events/s would cost more than sending them
            ping_interval=None,  # keepalive is the client's job: plain-text `ping`
            close_timeout=1,
            write_limit=2**20,
        )
        self.port = _bound_port(server)
        started.set()
        pusher = asyncio.create_task(self._push_forever())
        await self._stopping.wait()
        pusher.cancel()
        self._unstalled.set()
        for client in self._clients:
            client.conn.transport.resume_reading()  # lets stalled clients finish closing
        server.close()
        await server.wait_closed()

    # ------------------------------------------------------------------ connections

    def _refusal(self, path: str) -> str | None:
        """Why a connection must be closed for its key or plan, or None to serve it."""
        key = parse_qs(urlsplit(path).query).get("cg-api-key", [""])[0].strip()
        if not key:
            if self.require_key:
                return "API key missing."
            plan = self.plan
        elif self.keys is None:
            plan = self.plan
        elif key in self.keys:
            plan = self.keys[key]
        else:
            return "Invalid API key provided"
        return None if plan.has_websocket else "Upgrade plan"

    async def _handle(self, conn: ServerConnection) -> None:
        reason = self._refusal(conn.request.path if conn.request else "")
        if reason is not None:
            self.stats.rejected += 1
            await conn.close(CloseCode.POLICY_VIOLATION, reason)
            return
        client = _Client(next(self._ids), conn)
        self.stats.connections += 1
        self._clients.add(client)
        if self.faults.stall:
            conn.transport.pause_reading()
        sender = asyncio.create_task(self._send_forever(client))
        try:
            async for message in conn:
                if isinstance(message, str):
                    self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            sender.cancel()

    def _on_message(self, client: _Client, message: str) -> None:
        if message == "ping":
            self.stats.pings += 1
            if self.faults.answer_pings and not self.faults.stall:
                client.queue.put_nowait(_PONG)
            return
        request = parse_request(message)
        if request is None:
            return  # no error frame is documented; the real server's reaction is unknown
        method, channels = request
        if method == "subscribe":
            new = channels - client.channels
            client.channels |= new
            self.stats.subscriptions += len(new)
        else:
            client.channels -= channels

    async def _send_forever(self, client: _Client) -> None:
        assert self._unstalled is not None
        while True:
            frame = await client.queue.get()
            await self._unstalled.wait()
            try:
                await client.conn.send(frame.text)
            except ConnectionClosed:
                return
            self._count_sent(client, frame)

    def _count_sent(self, client: _Client, frame: _Frame) -> None:
        if frame is _PONG:
            self.stats.pongs += 1
            return
        self.stats.frames_sent += 1
        if frame.malformed:
            self.stats.malformed_frames += 1
            return
        self.stats.events_sent += len(frame.seq)
        self.stats.poisoned_events += frame.poisoned
        if self.record_sent:
            self.stats.sent.append(
                SentFrame(client.id, frame.channel, _now_ms(), frame.seq.copy(), frame.time.copy())
            )

    # ------------------------------------------------------------------ pushing

    async def _push_forever(self) -> None:
        """Push on a fixed cadence (not sleep-after-work), so heavy ticks do not slow it."""
        loop = asyncio.get_running_loop()
        cursor = self.feed.last_seq
        due = loop.time()
        while True:
            due = max(due + self.push_interval_s, loop.time())
            await asyncio.sleep(due - loop.time())
            self.feed.advance()
            batch = self.feed.since(cursor)
            if len(batch):
                cursor = batch.seq[-1]
                if not self.faults.stall:
                    self._distribute(batch)
            self.stats.ticks += 1

    def _distribute(self, batch: EventBatch) -> None:
        """Queue the batch to every subscriber, formatting each channel's frames once."""
        subscribers: dict[str, list[_Client]] = {}
        for client in self._clients:
            for channel in client.channels:
                subscribers.setdefault(channel, []).append(client)
        poisoned = self.faults.take_poison(len(batch)) if subscribers else 0
        for channel, clients in subscribers.items():
            for frame in self._frames(channel, batch, poisoned):
                for client in clients:
                    client.queue.put_nowait(frame)

    def _frames(self, channel: str, batch: EventBatch, poisoned: int = 0) -> list[_Frame]:
        """The batch as frames; its first `poisoned` events carry microsecond timestamps."""
        frames = []
        for lo in range(0, len(batch), self.max_batch):
            part = batch.take(slice(lo, lo + self.max_batch))
            items = CHANNELS[channel](part)
            bad = min(max(poisoned - lo, 0), len(items))
            for item in items[:bad]:
                item["time"] *= 1000
            text = dumps({"channel": channel, "data": items})
            kind = self.faults.malformed_kind()
            if kind is not None:
                text = break_frame(kind, text, channel, items)
            frames.append(
                _Frame(text, channel, part.seq[bad:], part.time[bad:], kind is not None, bad)
            )
        return frames

    # ------------------------------------------------------------------ fault plumbing

    def _call_soon(self, fn: Callable[[], T]) -> T | None:
        """Run `fn` on the server's loop and wait for it; None when the server is down."""
        loop = self._loop
        if self._thread is None or loop is None:
            return None

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    def _apply_stall(self) -> None:
        self._call_soon(self._stall_now)

    def _stall_now(self) -> None:
        assert self._unstalled is not None
        stalled = self.faults.stall
        for client in self._clients:
            transport = client.conn.transport
            transport.pause_reading() if stalled else transport.resume_reading()
        if stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def _poison_all(self, kind: str) -> int:
        return self._call_soon(lambda: self._poison_now(kind)) or 0

    def _poison_now(self, kind: str) -> int:
        newest = self.feed.since(self.feed.last_seq - 1)
        if not len(newest):
            return 0
        frames = 0
        for client in self._clients:
            for channel in client.channels:
                item = poison_item(CHANNELS[channel](newest)[0], kind)
                text = dumps({"channel": channel, "data": [item]})
                empty = np.empty(0, np.int64)
                client.queue.put_nowait(_Frame(text, channel, empty, empty, poisoned=1))
                frames += 1
        return frames

    def _close_all(self, code: int, reason: str) -> int:
        return self._call_soon(lambda: self._close_now(code, reason)) or 0

    def _close_now(self, code: int, reason: str) -> int:
        """Start closing every connection; the close handshake finishes in the background."""
        for client in self._clients:
            task = asyncio.create_task(client.conn.close(code, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(self._clients)


def _check_path(conn: ServerConnection, request: Request) -> Response | None:
    """Only /ws-api speaks WebSocket; anything else is a plain 404, as on a real host."""
    if urlsplit(request.path).path != PATH:
        return conn.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
    return None


def _bound_port(server: Server) -> int:
    return next(sock.getsockname()[1] for sock in server.sockets)
