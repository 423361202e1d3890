"""The pieces between socket and disk, each on its own: backoff, gap records, health, logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cg_assets.sim import LiquidationFeed, WsSimulator
from ws_sidecar.app import Redactor
from ws_sidecar.config import Config
from ws_sidecar.connection import Backoff, Connection
from ws_sidecar.health import HealthServer, Monitor
from ws_sidecar.parse import Reject
from ws_sidecar.quarantine import Quarantine
from ws_sidecar.recorder import Recorder
from ws_sidecar.sink import SpoolSink
from ws_sidecar.spool import SpoolWriter
from ws_sidecar.stats import Stats, now_ms
from ws_sidecar.summary import Tally

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
        self.tallies: list[Tally | None] = []
        self.quarantined = 0

    async def put(self, lines: list[str], tally: Tally | None = None) -> None:
        self.lines += lines
        self.tallies.append(tally)

    def note_quarantined(self, count: int) -> None:
        self.quarantined += count

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


def recorder_for(
    sink: FakeSink, tmp_path: Path, stats: Stats | None = None, **options: int
) -> Recorder:
    quarantine = Quarantine(tmp_path / "quarantine.jsonl", max_bytes=1_000_000)
    return Recorder(sink, stats or Stats(), quarantine=quarantine, **options)


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


def test_recorder_writes_events_and_one_gap_per_outage(tmp_path: Path):
    sink, stats = FakeSink(), Stats()
    t = ITEM["time"]
    recorder = recorder_for(sink, tmp_path, stats, gap_margin_ms=100, resume_from_ms=t - 5_000)

    async def scenario() -> None:
        await recorder.on_subscribed("c-1", t - 1_000)  # closes the previous run's gap
        message = json.dumps({"channel": "liquidationOrders", "data": [ITEM, {"x": 1}]})
        await recorder.on_message(message, "c-1", t + 200)
        await recorder.on_message("garbage", "c-1", t + 201)
        recorder.on_disconnected("c-1", "no pong within 10 s", t + 1_000)
        recorder.on_disconnected("c-2", "cannot connect", t + 1_500)  # still the same outage
        await recorder.on_subscribed("c-3", t + 3_000)
        await recorder.on_subscribed("c-3", t + 3_500)  # nothing new to report

    asyncio.run(scenario())
    records = sink.records()
    assert [r["kind"] for r in records] == ["gap", "event", "gap"]
    assert records[0] == {"kind": "gap", "start": t - 5_100, "end": t - 900,
                          "reason": "sidecar was not running", "conn_id": "c-1"}  # fmt: skip
    assert records[2] == {"kind": "gap", "start": t + 900, "end": t + 3_100,
                          "reason": "c-1: no pong within 10 s", "conn_id": "c-3"}  # fmt: skip
    assert records[1]["raw"] == ITEM
    # The event came with its frame's tally; gap records without (the summary reads them).
    gap_tally, event_tally, gap_again = sink.tallies
    assert (gap_tally, gap_again) == (None, None)
    assert event_tally is not None
    [coin_minute] = event_tally.summary().coin_minutes
    assert (coin_minute.coin, coin_minute.long_usd) == ("SOL", ITEM["volUsd"])
    assert (stats.events_received, stats.malformed_frames, stats.malformed_items) == (1, 1, 1)
    assert stats.quarantined_items == sink.quarantined == 1
    assert stats.last_event_time == ITEM["time"]


def test_a_first_run_records_no_gap(tmp_path: Path):
    sink = FakeSink()
    recorder = recorder_for(sink, tmp_path, gap_margin_ms=0)
    asyncio.run(recorder.on_subscribed("c-1", 5_000))
    assert sink.lines == []


def test_rejected_items_are_quarantined_with_reason_raw_value_and_receipt_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    sink, stats = FakeSink(), Stats()
    recorder = recorder_for(sink, tmp_path, stats, gap_margin_ms=0)
    received = ITEM["time"] + 150
    poison = {**ITEM, "time": ITEM["time"] * 1000}
    message = json.dumps({"channel": "liquidationOrders", "data": [poison, ITEM, {"x": 1}]})
    with caplog.at_level(logging.WARNING, logger="ws_sidecar.recorder"):
        asyncio.run(recorder.on_message(message, "c-1", received))
    assert [r["raw"] for r in sink.records()] == [ITEM]
    lines = (tmp_path / "quarantine.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "reason": f"time {poison['time']} is outside its receipt time {received} minus 3600 s"
            " to plus 300 s",
            "received_at": received,
            "conn_id": "c-1",
            "raw": poison,
        },
        {"reason": "missing field 'exchange'", "received_at": received, "conn_id": "c-1",
         "raw": {"x": 1}},
    ]  # fmt: skip
    assert (stats.quarantined_items, stats.malformed_items, sink.quarantined) == (2, 1, 2)
    assert stats.last_event_time == ITEM["time"]  # the poisoned time went nowhere
    assert "quarantined 2 item(s) (2 so far)" in caplog.text


def test_the_quarantine_file_is_bounded_and_cuts_huge_items(tmp_path: Path):
    path = tmp_path / "quarantine.jsonl"
    quarantine = Quarantine(path, max_bytes=2_000)
    for i in range(100):  # about 9 kB in all
        quarantine.add([Reject(f"bad #{i}", {"i": i}, malformed=True)], 5, "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quarantine.jsonl", "quarantine.jsonl.1"]
    assert all(p.stat().st_size <= 2_100 for p in tmp_path.iterdir())
    assert json.loads(path.read_text().splitlines()[-1])["reason"] == "bad #99"
    quarantine.add([Reject("too big", {"blob": "x" * 10_000}, malformed=False)], 5, "c")
    line = (tmp_path / "quarantine.jsonl.1").read_text().splitlines()[-1]
    assert len(line) < 2_200
    assert json.loads(line)["raw"].startswith('{"blob": "xxx')  # a preview, cut


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


# The /metrics contract dashboards and alert rules are written against: sample name -> (type,
# help). The parser names a counter's family without its `_total` suffix.
METRICS = {
    "ws_sidecar_events_received_total": ("counter", "Liquidation events received"),
    "ws_sidecar_events_written_total": ("counter", "Events in published segments"),
    "ws_sidecar_segments_written_total": ("counter", "Spool segments published"),
    "ws_sidecar_reconnects_total": ("counter", "Connection attempts after the first"),
    "ws_sidecar_malformed_frames_total": ("counter", "Unparseable frames skipped"),
    "ws_sidecar_malformed_items_total": ("counter", "Items skipped as malformed"),
    "ws_sidecar_quarantined_items_total": (
        "counter",
        "Items rejected by validation and written to the quarantine file",
    ),
    "ws_sidecar_ignored_frames_total": ("counter", "Non-liquidation frames ignored"),
    "ws_sidecar_backpressure_seconds_total": (
        "counter",
        "Time socket reads were paused for the disk",
    ),
    "ws_sidecar_queue_depth": ("gauge", "Events waiting for the disk writer"),
    "ws_sidecar_connected": ("gauge", "1 while a WebSocket connection is open"),
    "ws_sidecar_subscribed": ("gauge", "1 while subscribed to the channel"),
    "ws_sidecar_last_pong_age_seconds": ("gauge", "Seconds since the last pong (NaN: none yet)"),
    "ws_sidecar_spool_lag_seconds": ("gauge", "Age of the oldest event not yet durable"),
    "ws_sidecar_last_segment_seq": ("gauge", "Sequence number of the newest segment"),
}


def scrape(monitor: Monitor) -> dict[str, tuple[str, str, float]]:
    """/metrics as Prometheus parses it: sample name -> (type, help, value)."""
    samples = {}
    for family in text_string_to_metric_families(monitor.metrics().decode()):
        [sample] = family.samples
        assert sample.labels == {}
        samples[sample.name] = (family.type, family.documentation, sample.value)
    return samples


def test_metrics_keep_their_names_types_and_help(monitor: Monitor):
    got = scrape(monitor)
    assert {name: kind_help for name, (*kind_help, _) in got.items()} == {
        name: list(kind_help) for name, kind_help in METRICS.items()
    }


def test_metrics_report_the_live_counters(monitor: Monitor):
    stats = monitor.stats
    stats.events_received, stats.events_written, stats.segments_written = 42, 40, 3
    stats.reconnects, stats.malformed_frames, stats.malformed_items = 2, 5, 6
    stats.quarantined_items = 9
    stats.ignored_frames, stats.backpressure_s, stats.last_seq = 7, 1.25, 17
    stats.connected, stats.subscribed = True, False
    asyncio.run(monitor.sink.put(["a", "b", "c"]))  # no writer task: they stay queued
    values = {name: value for name, (_, _, value) in scrape(monitor).items()}
    lag = values.pop("ws_sidecar_spool_lag_seconds")
    assert 0 < lag < 60
    assert math.isnan(values.pop("ws_sidecar_last_pong_age_seconds"))
    assert values == {
        "ws_sidecar_events_received_total": 42,
        "ws_sidecar_events_written_total": 40,
        "ws_sidecar_segments_written_total": 3,
        "ws_sidecar_reconnects_total": 2,
        "ws_sidecar_malformed_frames_total": 5,
        "ws_sidecar_malformed_items_total": 6,
        "ws_sidecar_quarantined_items_total": 9,
        "ws_sidecar_ignored_frames_total": 7,
        "ws_sidecar_backpressure_seconds_total": 1.25,
        "ws_sidecar_queue_depth": 3,
        "ws_sidecar_connected": 1,
        "ws_sidecar_subscribed": 0,
        "ws_sidecar_last_segment_seq": 17,
    }
    stats.last_pong = now_ms() - 30_000
    age = scrape(monitor)["ws_sidecar_last_pong_age_seconds"][2]
    assert 30 <= age < 90


def test_each_monitor_has_a_registry_of_its_own(tmp_path: Path, monitor: Monitor):
    """Not the library's global registry, which would mix in its process and GC collectors
    and every other monitor created in the same interpreter."""
    monitor.stats.events_received = 1
    writer = SpoolWriter(tmp_path / "other")
    try:
        other = Monitor(Stats(events_received=9), SpoolSink(writer, Stats()))
        assert scrape(other)["ws_sidecar_events_received_total"][2] == 9
        assert scrape(monitor)["ws_sidecar_events_received_total"][2] == 1
    finally:
        writer.close()


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
    assert "ws_sidecar_connected" in {
        family.name for family in text_string_to_metric_families(got["/metrics"].text)
    }
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
