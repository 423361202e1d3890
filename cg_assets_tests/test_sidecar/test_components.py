"""The pieces between socket and disk, each on its own: backoff, gap records, health, logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from pathlib import Path

import pytest
import requests

from cg_assets.sim import LiquidationFeed, WsSimulator
from ws_sidecar.app import Redactor
from ws_sidecar.config import Config
from ws_sidecar.connection import Backoff, Connection
from ws_sidecar.health import HealthServer, Monitor
from ws_sidecar.recorder import Recorder
from ws_sidecar.sink import SpoolSink
from ws_sidecar.spool import SpoolWriter
from ws_sidecar.stats import Stats, now_ms

ITEM = {
    "baseAsset": "SOL",
    "exName": "Bybit",
    "price": 150.25,
    "side": 1,
    "symbol": "SOLUSDT",
    "time": 1_700_000_000_000,
    "volUsd": 5_000.5,
}


class FakeSink:
    """Collects what the recorder hands to the spool."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def put(self, lines: list[str]) -> None:
        self.lines += lines

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


def test_backoff_is_exponential_with_full_jitter_and_resets():
    backoff = Backoff(1.0, 60.0, random.Random(1))
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for ceiling in ceilings:
        assert 0 <= backoff.next_delay() <= ceiling
    samples = [Backoff(1.0, 60.0, random.Random(i)) for i in range(200)]
    firsts = [b.next_delay() for b in samples]
    assert min(firsts) < 0.1
    assert max(firsts) > 0.9  # the whole [0, base] range, not base plus a little noise
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_recorder_writes_events_and_one_gap_per_outage():
    sink, stats = FakeSink(), Stats()
    recorder = Recorder(sink, stats, gap_margin_ms=100, resume_from_ms=1_000)

    async def scenario() -> None:
        await recorder.on_subscribed("c-1", 5_000)  # closes the previous run's gap
        message = json.dumps({"channel": "liquidationOrders", "data": [ITEM, {"x": 1}]})
        await recorder.on_message(message, "c-1", 6_000)
        await recorder.on_message("garbage", "c-1", 6_001)
        recorder.on_disconnected("c-1", "no pong within 10 s", 7_000)
        recorder.on_disconnected("c-2", "cannot connect", 7_500)  # still the same outage
        await recorder.on_subscribed("c-3", 9_000)
        await recorder.on_subscribed("c-3", 9_500)  # nothing new to report

    asyncio.run(scenario())
    records = sink.records()
    assert [r["kind"] for r in records] == ["gap", "event", "gap"]
    assert records[0] == {"kind": "gap", "start": 900, "end": 5_100,
                          "reason": "sidecar was not running", "conn_id": "c-1"}  # fmt: skip
    assert records[2] == {"kind": "gap", "start": 6_900, "end": 9_100,
                          "reason": "c-1: no pong within 10 s", "conn_id": "c-3"}  # fmt: skip
    assert records[1]["raw"] == ITEM
    assert (stats.events_received, stats.malformed_frames, stats.malformed_items) == (1, 1, 1)
    assert stats.last_event_time == ITEM["time"]


def test_a_first_run_records_no_gap():
    sink = FakeSink()
    recorder = Recorder(sink, Stats(), gap_margin_ms=0)
    asyncio.run(recorder.on_subscribed("c-1", 5_000))
    assert sink.lines == []


@pytest.fixture
def monitor(tmp_path: Path):
    writer = SpoolWriter(tmp_path / "spool")
    yield Monitor(Stats(), SpoolSink(writer, Stats()))
    writer.close()


def test_readiness_needs_a_subscription_and_a_recent_pong(monitor: Monitor):
    stats = monitor.stats
    assert monitor.readiness()[0] is False
    assert "disconnected since" in monitor.readiness()[1]
    stats.connected = stats.subscribed = True
    assert monitor.readiness() == (False, "subscribed, waiting for the first pong")
    stats.last_pong = now_ms() - 61_000
    ready, reason = monitor.readiness()
    assert not ready
    assert "last pong 61 s ago" in reason
    stats.last_pong = now_ms()
    assert monitor.readiness()[0] is True


def test_status_document_has_the_contract_fields(monitor: Monitor):
    status = monitor.status()
    contract = ["connected", "since", "subscribed", "last_pong", "events_received",
                "events_written", "reconnects", "last_event_time", "spool_lag_s",
                "malformed_frames", "updated_at"]  # fmt: skip
    assert set(contract) <= set(status)
    json.dumps(status)


def test_metrics_are_prometheus_text(monitor: Monitor):
    monitor.stats.events_received = 42
    text = monitor.metrics()
    samples = {}
    for block in re.findall(r"# HELP (\S+) .+\n# TYPE (\S+) (counter|gauge)\n(\S+) (\S+)\n", text):
        name, typed, kind, sample, value = block
        assert name == typed == sample
        assert kind == "counter" if name.endswith("_total") else kind == "gauge"
        samples[name] = value
    assert len(samples) == text.count("# HELP")
    assert samples["ws_sidecar_events_received_total"] == "42"
    assert samples["ws_sidecar_last_pong_age_seconds"] == "NaN"
    for name in ("events_written_total", "reconnects_total", "malformed_frames_total",
                 "queue_depth", "connected", "spool_lag_seconds"):  # fmt: skip
        assert f"ws_sidecar_{name}" in samples


def test_health_server_routes(monitor: Monitor):
    async def scenario() -> dict[str, requests.Response]:
        server = HealthServer(monitor, port=0)
        await server.start()
        paths = ["/health/live", "/health/ready", "/metrics", "/nope"]
        try:
            responses = await asyncio.gather(
                *(asyncio.to_thread(requests.get, server.url + p, timeout=5) for p in paths)
            )
        finally:
            await server.close()
        return dict(zip(paths, responses, strict=True))

    got = asyncio.run(scenario())
    assert got["/health/live"].status_code == 200
    assert got["/health/ready"].status_code == 503
    assert got["/health/ready"].json()["ready"] is False
    assert "disconnected" in got["/health/ready"].json()["reason"]
    assert got["/metrics"].status_code == 200
    assert got["/metrics"].headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert got["/nope"].status_code == 404


def test_redactor_masks_the_key_in_messages_and_tracebacks(caplog: pytest.LogCaptureFixture):
    key = "cg-secret-xyz"
    logger = logging.getLogger("test_redactor")
    redactor = Redactor((key,))
    caplog.handler.addFilter(redactor)
    try:
        logger.warning("dialing %s", f"ws://h/p?cg-api-key={key}")
        try:
            raise ValueError(f"bad uri ws://h/p?cg-api-key={key}")
        except ValueError:
            logger.exception("failed")
    finally:
        caplog.handler.removeFilter(redactor)
    assert key not in caplog.text
    assert "cg-api-key=***" in caplog.text


class SlowHandler:
    """Takes 10 ms per message, so the reader falls ever further behind a fast server."""

    def __init__(self) -> None:
        self.messages = 0
        self.disconnects: list[str] = []

    async def on_subscribed(self, conn_id: str, at_ms: int) -> None:
        pass

    async def on_message(self, message: str | bytes, conn_id: str, received_at: int) -> None:
        self.messages += 1
        await asyncio.sleep(0.01)

    def on_disconnected(self, conn_id: str, reason: str, last_seen_ms: int) -> None:
        self.disconnects.append(reason)


@pytest.mark.slow
def test_a_pong_stuck_behind_a_backlog_does_not_kill_the_connection(
    market, caplog: pytest.LogCaptureFixture
):
    feed = LiquidationFeed(market, seed=2, rate_per_s=300)
    handler, stats = SlowHandler(), Stats()

    def pong_delays() -> list[int]:
        return [int(m) for m in re.findall(r"pong \((\d+) ms\)", caplog.text)]

    # One event per frame at 300/s against a reader that manages 100 frames/s.
    with WsSimulator(feed, require_key=False, max_batch=1) as sim:
        config = Config(ws_url=sim.url, ping_interval_s=0.1, pong_timeout_s=0.3, watchdog_s=1)

        async def scenario() -> None:
            task = asyncio.create_task(Connection(config, handler, stats).run())
            await asyncio.sleep(1.2)  # the backlog grows by 200 frames a second
            feed.rate_per_s = 0
            deadline = time.monotonic() + 15
            while max(pong_delays(), default=0) < 600 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        with caplog.at_level(logging.INFO, logger="ws_sidecar.connection"):
            asyncio.run(scenario())
    assert max(pong_delays()) >= 600  # pongs far later than the 0.3 s timeout ...
    assert handler.disconnects == []  # ... and the connection was kept
