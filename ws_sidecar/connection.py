"""The WebSocket connection to CoinGlass: dial, subscribe, keep alive, and redial forever.

This module knows the protocol (reference §6) and nothing about payloads or storage: every
data message goes to a `Handler`, which also hears when a subscription starts and when a
subscribed connection ends (the spool's gap records come from those two moments).

Liveness: CoinGlass expects the text `ping` every ~20 s and answers the text `pong`. A ping
not answered in time means the connection is dead, however healthy the TCP socket looks.
Separately, a watchdog kills a connection that has been silent (no data and no pong) for too
long; a quiet market with punctual pongs is healthy and left alone. A pong queues behind
everything the server sent before it, so both only judge while the reader is idle, waiting
for the server: a client working through a backlog (a burst, a busy CPU) or held by its
handler (the disk pushing back) has not yet read its way to the pong, and killing the
connection then would turn a delay into a loss. A late pong is fatal once the reader has
caught up and it still has not come.

Redials back off exponentially with full jitter (1 s doubling to 60 s), so a fleet of
sidecars does not stampede a recovering server; the backoff resets once a connection has
stayed up for a while.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidStatus,
    WebSocketException,
)
from websockets.frames import CloseCode

from ws_sidecar.config import Config
from ws_sidecar.stats import Stats, now_ms

log = logging.getLogger(__name__)

# A burst can put thousands of liquidations in one push; the library's 1 MiB default would
# turn that into a disconnect.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_PONGS = ("pong", b"pong")
LATE_RECHECK_S = 0.05


class Handler(Protocol):
    """Receives what the connection learns; `on_subscribed` comes before the first message."""

    async def on_subscribed(self, conn_id: str, at_ms: int) -> None: ...

    async def on_message(self, message: str | bytes, conn_id: str, received_at: int) -> None: ...

    def on_disconnected(self, conn_id: str, reason: str, last_seen_ms: int) -> None: ...


class Backoff:
    """Exponential backoff with full jitter: the n-th consecutive failure waits a uniform
    random time in [0, min(cap, base * 2**n)]."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Liveness:
    """What the keepalive judges a connection by (monotonic seconds, except the `_ms`)."""

    last_seen_ms: int = field(default_factory=now_ms)
    waiting_since: float | None = None  # the reader is idle, waiting for a message
    pings: deque[float] = field(default_factory=deque)  # unanswered, oldest first
    subscribed_ms: int = 0  # when the subscribe message went out
    confirmed_at: float | None = None  # when the first message after it arrived


class Connection:
    def __init__(
        self, config: Config, handler: Handler, stats: Stats, rng: random.Random | None = None
    ) -> None:
        self._config = config
        self._handler = handler
        self._stats = stats
        self._backoff = Backoff(config.backoff_base_s, config.backoff_cap_s, rng)
        self._run_id = f"{now_ms():x}"
        self._subscribe = json.dumps({"method": "subscribe", "channels": [config.channel]})

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until cancelled."""
        for number in itertools.count(1):
            conn_id = f"{self._run_id}-{number}"
            if number > 1:
                self._stats.reconnects += 1
            live = _Liveness()
            reason = await self._attempt(conn_id, live)
            if live.confirmed_at is not None:
                self._handler.on_disconnected(conn_id, reason, live.last_seen_ms)
                if time.monotonic() - live.confirmed_at >= self._config.stable_after_s:
                    self._backoff.reset()
            delay = self._backoff.next_delay()
            log.warning("disconnect: %s, reconnect in %.1fs", reason, delay)
            await asyncio.sleep(delay)

    async def _attempt(self, conn_id: str, live: _Liveness) -> str:
        """One connection from dial to loss; returns why it ended (never raises, except on
        cancellation)."""
        log.info("connecting to %s (%s)", self._config.masked_url, conn_id)
        try:
            async with connect(
                self._config.connect_url,
                ping_interval=None,  # CoinGlass's keepalive is the text ping below
                open_timeout=10,
                close_timeout=1,
                max_size=MAX_MESSAGE_BYTES,
            ) as ws:
                self._set_state(connected=True)
                await ws.send(self._subscribe)
                live.subscribed_ms = live.last_seen_ms = now_ms()
                return await self._pump(ws, conn_id, live)
        except (OSError, TimeoutError, WebSocketException) as exc:
            return _describe(exc)
        finally:
            self._set_state(connected=False)

    def _set_state(self, connected: bool) -> None:
        if self._stats.connected != connected:
            self._stats.since = now_ms()
        self._stats.connected = connected
        if not connected:
            self._stats.subscribed = False

    async def _pump(self, ws: ClientConnection, conn_id: str, live: _Liveness) -> str:
        receiver = asyncio.create_task(self._receive(ws, conn_id, live))
        keeper = asyncio.create_task(self._keepalive(ws, live))
        try:
            done, _ = await asyncio.wait({receiver, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiver.cancel()
            keeper.cancel()
            await asyncio.gather(receiver, keeper, return_exceptions=True)
        return done.pop().result()

    async def _receive(self, ws: ClientConnection, conn_id: str, live: _Liveness) -> str:
        while True:
            live.waiting_since = time.monotonic()
            try:
                message = await ws.recv()
            except ConnectionClosedOK:
                detail = f": {ws.close_reason}" if ws.close_reason else ""
                return f"server closed the connection (code {ws.close_code}{detail})"
            finally:
                live.waiting_since = None
            live.last_seen_ms = received_at = now_ms()
            if live.confirmed_at is None:
                await self._confirm(conn_id, live)
            if len(message) < 16 and message.strip() in _PONGS:
                self._pong(live, received_at)
            else:
                await self._handler.on_message(message, conn_id, received_at)

    async def _confirm(self, conn_id: str, live: _Liveness) -> None:
        """The first message after subscribing proves the subscription is live (CoinGlass
        sends no acknowledgement; a refused key gets a close instead): only now does the
        outage before it end, so a server that keeps refusing adds no gap records."""
        live.confirmed_at = time.monotonic()
        self._stats.subscribed = True
        log.info("subscribed to %s (%s)", self._config.channel, conn_id)
        await self._handler.on_subscribed(conn_id, live.subscribed_ms)

    def _pong(self, live: _Liveness, received_at: int) -> None:
        rtt = f" ({(time.monotonic() - live.pings.popleft()) * 1000:.0f} ms)" if live.pings else ""
        self._stats.last_pong = received_at
        log.info("pong%s", rtt)

    async def _keepalive(self, ws: ClientConnection, live: _Liveness) -> str:
        cfg = self._config
        next_ping = time.monotonic()
        while True:
            now = time.monotonic()
            idle = live.waiting_since is not None  # else the reader is still busy reading
            if idle and now - live.waiting_since > cfg.watchdog_s:
                return f"no data and no pong for {cfg.watchdog_s:g} s"
            late = bool(live.pings) and now - live.pings[0] > cfg.pong_timeout_s
            if late and idle:
                return f"no pong within {cfg.pong_timeout_s:g} s"
            if now >= next_ping:
                try:
                    await asyncio.wait_for(ws.send("ping"), cfg.pong_timeout_s)
                except TimeoutError:
                    return f"could not send a ping within {cfg.pong_timeout_s:g} s"
                live.pings.append(now)
                log.info("ping")
                next_ping = now + cfg.ping_interval_s
            await asyncio.sleep(self._nap(live, next_ping, late))

    def _nap(self, live: _Liveness, next_ping: float, late: bool) -> float:
        """Sleep until the next thing to check; a late pong is re-checked soon, as the reader
        may be about to catch up with it."""
        cfg = self._config
        wake = [next_ping]
        if live.waiting_since is not None:
            wake.append(live.waiting_since + cfg.watchdog_s)
        if live.pings:
            wake.append(live.pings[0] + cfg.pong_timeout_s)
        nap = min(wake) - time.monotonic()
        return min(max(nap, LATE_RECHECK_S if late else 0.01), 1.0)


def _describe(exc: BaseException) -> str:
    """A log-friendly reason for a failed or lost connection."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = " (check CG_API_KEY and the plan)" if status in (401, 403) else ""
        return f"server refused the connection: HTTP {status}{hint}"
    if isinstance(exc, ConnectionClosed):
        if exc.rcvd is not None and exc.rcvd.code == CloseCode.POLICY_VIOLATION:
            return f"server refused the subscription: {exc.rcvd.reason!r} (check CG_API_KEY)"
        return f"connection lost: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out opening the connection"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
