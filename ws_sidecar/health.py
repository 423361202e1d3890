"""How the sidecar is seen from outside: a status file, health probes and Prometheus metrics.

The status file (`CG_DATA_DIR/sidecar_status.json`, rewritten atomically every ~2 s) is what
Dagster's freshness check reads, since Dagster runs share the data directory but not the
network namespace of a container. The HTTP server (loopback, or the address
`SIDECAR_HEALTH_HOST` names in a container) is for process supervisors and Prometheus:
`/health/live` says the process is up, `/health/ready` that it is subscribed and CoinGlass
answered a ping recently, `/metrics` exposes the counters through
`prometheus_client`, from a registry of this process's own (the library's global default
registry would add its process and GC collectors, and anything else that registers there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from ws_sidecar.sink import SpoolSink
from ws_sidecar.stats import Stats, now_ms

log = logging.getLogger(__name__)

READY_PONG_AGE_S = 60.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip
# The server ignores Accept headers, so it names one format: the 0.0.4 text it has always
# served (the library's CONTENT_TYPE_LATEST has moved on to 1.0.0).
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class Monitor(Collector):
    """Derives the status document, readiness and metrics from the live counters."""

    def __init__(self, stats: Stats, sink: SpoolSink) -> None:
        self.stats = stats
        self.sink = sink
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "connected": s.connected,
            "since": s.since,
            "subscribed": s.subscribed,
            "last_pong": s.last_pong,
            "events_received": s.events_received,
            "events_written": s.events_written,
            "reconnects": s.reconnects,
            "last_event_time": s.last_event_time,
            "spool_lag_s": round(self.sink.lag_s(), 3),
            "malformed_frames": s.malformed_frames,
            "updated_at": now_ms(),
            "malformed_items": s.malformed_items,
            "quarantined_items": s.quarantined_items,
            "queue_depth": self.sink.depth,
            "last_seq": s.last_seq,
            "last_published_seq": s.last_published_seq,
            "pid": os.getpid(),
        }

    def readiness(self) -> tuple[bool, str]:
        """Ready = subscribed and a pong within READY_PONG_AGE_S; else why not."""
        s = self.stats
        if not s.subscribed:
            state = "connected, not subscribed" if s.connected else "disconnected"
            return False, f"{state} since {s.since}"
        age = self._pong_age_s()
        if age is None:
            return False, "subscribed, waiting for the first pong"
        if age > READY_PONG_AGE_S:
            return False, f"last pong {age:.0f} s ago (limit {READY_PONG_AGE_S:.0f} s)"
        return True, f"subscribed, last pong {age:.1f} s ago"

    def _pong_age_s(self) -> float | None:
        pong = self.stats.last_pong
        return None if pong is None else max(now_ms() - pong, 0) / 1000

    def collect(self) -> Iterator[Metric]:
        """The counters as they are at scrape time: the hot path keeps bumping plain `Stats`
        attributes and pays nothing for metrics between scrapes."""
        s = self.stats
        age = self._pong_age_s()
        rows: list[tuple[str, str, str, float]] = [
            ("events_received_total", "counter", "Liquidation events received", s.events_received),
            ("events_written_total", "counter", "Events in published segments", s.events_written),
            ("segments_written_total", "counter", "Spool segments published", s.segments_written),
            ("reconnects_total", "counter", "Connection attempts after the first", s.reconnects),
            ("malformed_frames_total", "counter", "Unparseable frames skipped", s.malformed_frames),
            ("malformed_items_total", "counter", "Items skipped as malformed", s.malformed_items),
            ("quarantined_items_total", "counter",
             "Items rejected by validation and written to the quarantine file",
             s.quarantined_items),
            ("ignored_frames_total", "counter", "Non-liquidation frames ignored", s.ignored_frames),
            ("backpressure_seconds_total", "counter", "Time socket reads were paused for the disk",
             s.backpressure_s),
            ("queue_depth", "gauge", "Events waiting for the disk writer", self.sink.depth),
            ("connected", "gauge", "1 while a WebSocket connection is open", s.connected),
            ("subscribed", "gauge", "1 while subscribed to the channel", s.subscribed),
            ("last_pong_age_seconds", "gauge", "Seconds since the last pong (NaN: none yet)",
             math.nan if age is None else age),
            ("spool_lag_seconds", "gauge", "Age of the oldest event not yet durable",
             self.sink.lag_s()),
            ("last_segment_seq", "gauge", "Sequence number of the newest segment", s.last_seq),
        ]  # fmt: skip
        for name, kind, help_text, value in rows:
            yield _FAMILIES[kind](f"ws_sidecar_{name}", help_text, value=float(value))

    def metrics(self) -> bytes:
        """Prometheus text exposition format 0.0.4 (`METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def write_status(path: Path, document: dict[str, Any]) -> None:
    """Replace the status file atomically: a reader sees the old or the new one, whole."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w") as f:
        json.dump(document, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


async def keep_status_file(path: Path, interval_s: float, document: Callable[[], dict]) -> None:
    """Rewrite the status file every `interval_s` until cancelled; a failure is logged, not
    fatal (the spool matters more than its report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            await asyncio.to_thread(write_status, path, document())
        except OSError as exc:
            log.error("cannot write the status file %s: %s", path, exc)
        await asyncio.sleep(interval_s)


class HealthServer:
    """A tiny HTTP/1.1 server; one request per connection."""

    def __init__(self, monitor: Monitor, host: str = "127.0.0.1", port: int = 0) -> None:
        self._monitor = monitor
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)).strip():
                pass  # headers: nothing here depends on them
            status, content_type, body = self.respond(request.decode("latin-1"))
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if request.startswith(b"HEAD") else body))
            await writer.drain()
        except (OSError, TimeoutError, UnicodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def respond(self, request_line: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request line such as `GET /metrics HTTP/1.1`."""
        parts = request_line.split()
        if len(parts) < 2:
            return _json(400, {"error": "bad request line"})
        method, path = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{method} not allowed"})
        if path == "/health/live":
            return _json(200, {"status": "live"})
        if path == "/health/ready":
            ready, reason = self._monitor.readiness()
            return _json(200 if ready else 503, {"ready": ready, "reason": reason})
        if path == "/metrics":
            return 200, METRICS_CONTENT_TYPE, self._monitor.metrics()
        return _json(404, {"error": f"no such path {path}", "paths": ["/health/live",
                     "/health/ready", "/metrics"]})  # fmt: skip


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload).encode()
