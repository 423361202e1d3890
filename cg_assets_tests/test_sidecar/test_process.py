"""The real sidecar (`python -m ws_sidecar`) against the WebSocket simulator, faults injected.

Each test watches the process from outside, as an operator or Dagster would: the status file,
the health server, the spool and the log. "Nothing lost, nothing duplicated" is checked
against the simulator's own count of events it sent.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from cg_assets.sim import LiquidationFeed, WsSimulator
from cg_assets_tests.sidecar_harness import REPO, Sidecar, wait_until
from cg_assets_tests.test_sidecar.conftest import assert_same_summary
from ws_sidecar.parse import event_id
from ws_sidecar.spool import list_segments, read_segment, read_summary_file
from ws_sidecar.stats import now_ms
from ws_sidecar.summary import summarize

pytestmark = pytest.mark.slow

CAMEL_KEYS = {"baseAsset", "exName", "price", "side", "symbol", "time", "volUsd"}
SNAKE_KEYS = {"base_asset", "exchange", "price", "side", "symbol", "time", "volume_usd"}


def feed_ids(feed: LiquidationFeed) -> dict[str, str]:
    """event_id -> liquidated side of every event the feed generated."""
    return {
        event_id(e.exchange, e.pair, e.time, e.price, e.side, e.usd_value): e.side
        for e in feed.events()
    }


def settle(sidecar: Sidecar, sim: WsSimulator, feed: LiquidationFeed) -> list[dict]:
    """Stop the feed, let the last pushes land, and return the spool's events once it holds
    exactly as many as the simulator sent; fail on a loss or a duplicate."""
    feed.rate_per_s = 0
    ticks = sim.stats.ticks
    wait_until(lambda: sim.stats.ticks >= ticks + 3, 5, "the simulator's last pushes")

    def complete() -> list[dict] | None:
        events = sidecar.records()[0]
        return events if len(events) >= sim.stats.events_sent else None

    events = wait_until(complete, 10, "every sent event in the spool")
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was spooled twice"
    assert len(events) == sim.stats.events_sent
    return events


def test_subscribes_keeps_alive_and_reports_ready(make_sidecar, ws_sim: WsSimulator):
    sidecar = make_sidecar()
    sidecar.wait_status(
        lambda s: s["subscribed"] and s["last_pong"] and s["events_written"] > 0,
        15,
        "a subscription, a pong and events on disk",
    )
    wait_until(lambda: ws_sim.stats.pongs >= 3, 10, "three pings answered")
    assert ws_sim.stats.subscriptions == 1
    assert sidecar.get("/health/live").status_code == 200
    ready = sidecar.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    metrics = sidecar.get("/metrics").text
    assert "ws_sidecar_connected 1" in metrics
    assert re.search(r"ws_sidecar_events_written_total [1-9]", metrics)
    log = sidecar.log()
    for phrase in (
        "connecting to ws://127.0.0.1",
        "subscribed to liquidationOrders",
        "ws_sidecar.connection: ping",
        "ws_sidecar.connection: pong (",
    ):
        assert phrase in log


def test_reconnects_and_resubscribes_after_a_server_close(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed
):
    sidecar = make_sidecar()
    sidecar.wait_status(lambda s: s["events_written"] > 0, 15, "events on disk")
    assert ws_sim.faults.close_connections() == 1
    sidecar.wait_status(lambda s: s["reconnects"] >= 1 and s["subscribed"], 10, "a resubscription")
    wait_until(lambda: ws_sim.stats.subscriptions == 2, 5, "a second subscribe message")
    assert re.search(
        r"disconnect: server closed the connection \(code 1001: simulated disconnect\),"
        r" reconnect in \d+\.\ds",
        sidecar.log(),
    )
    gaps = wait_until(lambda: sidecar.records()[1], 5, "a gap record")
    assert len(gaps) == 1
    assert gaps[0]["start"] < gaps[0]["end"]
    assert "code 1001" in gaps[0]["reason"]
    settle(sidecar, ws_sim, feed)


def test_a_missed_pong_means_a_new_connection_within_the_timeout(make_sidecar, ws_sim: WsSimulator):
    sidecar = make_sidecar()  # ping every 0.5 s, pong within 1 s, backoff <= 0.4 s
    sidecar.wait_status(lambda s: s["subscribed"] and s["last_pong"], 15, "a first pong")
    ws_sim.faults.answer_pings = False
    started = time.monotonic()
    wait_until(lambda: ws_sim.stats.connections >= 2, 5, "a new connection")
    assert time.monotonic() - started < 3.5  # next ping 0.5 + timeout 1 + backoff 0.4 + slack
    assert "disconnect: no pong within 1 s" in sidecar.log()
    ws_sim.faults.answer_pings = True
    sidecar.wait_status(lambda s: s["subscribed"], 10, "a healthy connection again")
    wait_until(lambda: sidecar.get("/health/ready").status_code == 200, 10, "readiness")


def test_a_quiet_connection_that_answers_pings_is_kept(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed
):
    feed.rate_per_s = 0
    sidecar = make_sidecar(SIDECAR_WATCHDOG_S="1.2")
    sidecar.wait_subscribed()
    pongs = ws_sim.stats.pongs
    wait_until(lambda: ws_sim.stats.pongs >= pongs + 6, 10, "3 s of pongs, over 2 watchdog periods")
    assert ws_sim.stats.connections == 1
    assert sidecar.status()["reconnects"] == 0


def test_the_watchdog_drops_a_silent_connection(make_sidecar, ws_sim: WsSimulator):
    # A pong timeout longer than the watchdog, so that silence is what ends the connection.
    sidecar = make_sidecar(SIDECAR_PONG_TIMEOUT_S="30", SIDECAR_WATCHDOG_S="1.5")
    sidecar.wait_status(lambda s: s["subscribed"] and s["last_pong"], 15, "a first pong")
    ws_sim.faults.stall = True
    wait_until(lambda: "no data and no pong for 1.5 s" in sidecar.log(), 6, "the watchdog")
    ws_sim.faults.stall = False
    sidecar.wait_status(lambda s: s["reconnects"] >= 1 and s["subscribed"], 15, "a resubscription")


def test_malformed_frames_are_counted_and_skipped(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed
):
    ws_sim.faults.malformed_rate = 0.3
    sidecar = make_sidecar()
    status = sidecar.wait_status(
        lambda s: s["malformed_frames"] >= 3 and s["malformed_items"] >= 3,
        15,
        "malformed frames and items counted",
    )
    ws_sim.faults.malformed_rate = 0.0
    settle(sidecar, ws_sim, feed)  # every well-formed event, once
    assert status["reconnects"] == 0
    assert "skipped a malformed frame" in sidecar.log()
    assert re.search(r"ws_sidecar_malformed_frames_total [1-9]", sidecar.get("/metrics").text)


@pytest.mark.parametrize(
    ("channel", "keys"),
    [("liquidationOrders", CAMEL_KEYS), ("liquidation_orders", SNAKE_KEYS)],
)
def test_both_payload_styles_are_spooled_alike(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed, channel, keys
):
    sidecar = make_sidecar(CG_WS_CHANNEL=channel)
    sidecar.wait_status(lambda s: s["events_written"] >= 50, 15, "50 events on disk")
    events = settle(sidecar, ws_sim, feed)
    sides = feed_ids(feed)
    for event in events:
        assert set(event["raw"]) == keys
        assert event["source"] == "ws"
        assert sides[event["event_id"]] == event["side"]  # the feed's own event, same side
    assert {e["side"] for e in events} == {"long", "short"}


def test_a_poisoned_timestamp_is_quarantined_and_nothing_else_is_lost(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed
):
    sidecar = make_sidecar()
    sidecar.wait_subscribed()
    sidecar.wait_status(lambda s: s["events_written"] >= 20, 15, "20 events on disk")
    ws_sim.faults.poison_next(3)  # three events stamped in microseconds
    sidecar.wait_status(lambda s: s["quarantined_items"] == 3, 15, "three items quarantined")
    events = settle(sidecar, ws_sim, feed)  # every other event, once
    assert ws_sim.stats.poisoned_events == 3
    assert max(e["time"] for e in events) < 10**14

    quarantined = [
        json.loads(line)
        for line in (sidecar.data_dir / "quarantine.jsonl").read_text().splitlines()
    ]
    assert len(quarantined) == 3
    for entry in quarantined:
        assert entry["raw"]["time"] > 10**14
        assert f"time {entry['raw']['time']} is outside its receipt time" in entry["reason"]
        assert abs(entry["received_at"] - entry["raw"]["time"] // 1000) < 60_000
    assert re.search(r"^ws_sidecar_quarantined_items_total 3\.0$", sidecar.get("/metrics").text,
                     re.MULTILINE)  # fmt: skip
    assert re.search(
        r"quarantined \d item\(s\) \(\d so far\) in \S+quarantine\.jsonl: time \d+ is outside",
        sidecar.log(),
    )

    # Every segment went out with its summary, which agrees with the segment itself and
    # carries the quarantine count on to the ingestion runs.
    segments = list_segments(sidecar.spool)
    summaries = [read_summary_file(s.path) for s in segments]
    assert None not in summaries
    assert sum(s.quarantined for s in summaries) == 3
    for segment, summary in zip(segments, summaries, strict=True):
        contents = read_segment(segment.path)
        computed = summarize(contents.events, quarantined=summary.quarantined)
        assert_same_summary(summary, computed)


def test_sigterm_flushes_everything_and_exits_0_within_5_s(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed
):
    feed.rate_per_s = 5_000
    # Segments that would only roll in 30 s: everything received is still in memory.
    sidecar = make_sidecar(SIDECAR_SEGMENT_MAX_AGE_S="30", SIDECAR_SEGMENT_MAX_EVENTS="1000000")
    sidecar.wait_status(lambda s: s["events_received"] >= 5_000, 15, "5,000 events in memory")
    assert sidecar.status()["events_written"] == 0
    code, elapsed = sidecar.terminate()
    assert code == 0
    assert elapsed < 5
    final = sidecar.status()
    assert final["events_written"] == final["events_received"] >= 5_000
    events = sidecar.records()[0]
    assert len(events) == len({e["event_id"] for e in events}) == final["events_written"]
    assert "flushed in" in sidecar.log()


def test_kill_9_mid_burst_then_restart(make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed):
    feed.rate_per_s = 20_000
    first = make_sidecar(SIDECAR_SEGMENT_MAX_EVENTS="500", SIDECAR_SEGMENT_MAX_AGE_S="0.05")
    first.wait_status(lambda s: s["events_written"] >= 10_000, 20, "10,000 events on disk")
    feed.burst("BTC", 50e6, 5_000)  # a cascade in flight while the process dies
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(5)
    killed_at = now_ms()

    # Whatever was published is complete: every segment reads, no event twice.
    before = list_segments(first.spool)
    events_before = [e for s in before for e in read_segment(s.path).events]
    assert len(events_before) >= 10_000
    assert len({e["event_id"] for e in events_before}) == len(events_before)
    last_received = max(e["received_at"] for e in events_before)

    feed.rate_per_s = 200
    second = make_sidecar()
    second.wait_status(lambda s: s["subscribed"] and s["events_written"] > 0, 15, "a restart")
    after = list_segments(second.spool, after_seq=before[-1].seq)
    assert after[0].seq == before[-1].seq + 1  # numbering continues
    gaps = [g for s in after for g in read_segment(s.path).gaps]
    assert len(gaps) == 1
    assert gaps[0]["reason"] == "sidecar was not running"
    assert gaps[0]["start"] <= last_received  # covers whatever the killed process lost
    assert gaps[0]["end"] >= killed_at  # up to the new subscription
    events, _ = second.records()
    assert len({e["event_id"] for e in events}) == len(events)


def test_the_api_key_never_appears_in_output(make_sidecar, feed: LiquidationFeed):
    key = f"cg-secret-{secrets.token_hex(8)}"
    with WsSimulator(feed, keys={key: "standard"}, require_key=True) as sim:
        sidecar = make_sidecar(CG_WS_URL=sim.url, CG_API_KEY=key)
        sidecar.wait_status(lambda s: s["subscribed"] and s["last_pong"], 15, "a subscription")
        sim.faults.close_connections()
        sidecar.wait_status(lambda s: s["reconnects"] >= 1 and s["subscribed"], 10, "a reconnect")
        metrics = sidecar.get("/metrics").text
        status = (sidecar.data_dir / "sidecar_status.json").read_text()
        assert sidecar.terminate()[0] == 0

        refused = make_sidecar(CG_WS_URL=sim.url, CG_API_KEY=f"{key}-wrong")
        refusal = "refused the subscription: 'Invalid API key provided' (check CG_API_KEY)"
        wait_until(lambda: refusal in refused.log(), 10, "the refusal in the log")
        refused.wait_status(lambda s: s["connected"] is not None, 5, "a status file")
        assert refused.status()["subscribed"] is False
        refused.terminate()
    log = sidecar.log()
    assert "cg-api-key=***" in log
    for text in (log, metrics, status, *(p.read_text() for p in sidecar.spool.iterdir())):
        assert key not in text


def test_start_up_problems_exit_non_zero_with_a_clear_message(make_sidecar):
    bad = make_sidecar(CG_WS_CHANNEL="liquidations")
    assert bad.proc.wait(10) == 2
    assert "CG_WS_CHANNEL='liquidations': expected one of liquidationOrders" in bad.log()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = make_sidecar(SIDECAR_HEALTH_PORT=str(port))
        assert busy.proc.wait(10) == 2
    assert f"cannot serve health checks on 127.0.0.1:{port} (SIDECAR_HEALTH_PORT)" in busy.log()


def test_a_second_sidecar_on_the_same_spool_is_refused(make_sidecar):
    first = make_sidecar()
    first.wait_subscribed()
    second = make_sidecar()
    assert second.proc.wait(10) == 3
    assert "another process is writing to the spool" in second.log()
    first.assert_running()


def test_the_sidecar_imports_neither_dagster_nor_cg_assets():
    code = (
        "import sys, ws_sidecar.app; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'cg_assets', "
        "'pandas', 'numpy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def health_on(host: str, url: str) -> int | None:
    """The status of /health/live asked at `host` on the port of `url`; None if refused."""
    port = url.rsplit(":", 1)[1]
    try:
        return requests.get(f"http://{host}:{port}/health/live", timeout=5).status_code
    except requests.ConnectionError:
        return None


def test_the_health_server_listens_where_sidecar_health_host_says(make_sidecar):
    """In a container the probes come from outside loopback: with SIDECAR_HEALTH_HOST=0.0.0.0
    the sidecar answers at an address other than 127.0.0.1 (here 127.0.0.2, which a server
    bound to 127.0.0.1 does not serve); by default it does not."""
    everywhere = make_sidecar(SIDECAR_HEALTH_HOST="0.0.0.0")
    assert health_on("127.0.0.2", everywhere.health_url) == 200
    everywhere.terminate()
    local = make_sidecar()
    assert health_on("127.0.0.1", local.health_url) == 200
    assert health_on("127.0.0.2", local.health_url) is None
