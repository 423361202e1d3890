"""The liquidation pipeline with every part real: the simulator's WebSocket and REST sides
sharing one feed, the sidecar as a process (killed with -9 mid-burst and restarted), the spool
sensor naming the batches and the ingest job writing Parquet, gaps refilled over HTTP.

The truth is the simulator's feed: what it generated, and what the spool holds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from cg_assets.definitions import build_defs
from cg_assets.liquidations import INGEST_JOB
from cg_assets.liquidations.assets import ASSET
from cg_assets.settings import Settings
from cg_assets.sim import LiquidationFeed, SimulatorServer, SyntheticMarket, WsSimulator
from cg_assets.storage import IngestedRanges, Lake
from cg_assets_tests.sidecar_harness import Sidecar
from ws_sidecar.parse import event_id
from ws_sidecar.stats import now_ms

pytestmark = pytest.mark.slow


@pytest.fixture
def sim(market: SyntheticMarket, feed: LiquidationFeed) -> Iterator[SimulatorServer]:
    """The REST side over the same feed the WebSocket simulator pushes."""
    with SimulatorServer(market, plan="professional", require_key=False, feed=feed) as server:
        yield server


def ingest_spool(settings: Settings) -> list[dg.ExecuteInProcessResult]:
    """Tick the spool sensor until it has nothing left and run every batch it asks for."""
    defs = build_defs(settings)
    sensor = defs.resolve_sensor_def("liquidation_spool_sensor")
    job = defs.resolve_job_def(INGEST_JOB)
    results = []
    with dg.instance_for_test() as instance:
        while True:
            with dg.build_sensor_context(
                instance=instance, definitions=defs, resources=defs.resources
            ) as context:
                tick = sensor.evaluate_tick(context)
            if not tick.run_requests:
                return results
            for request in tick.run_requests:
                result = job.execute_in_process(
                    run_config=request.run_config, tags=request.tags, instance=instance
                )
                assert result.success
                results.append(result)


def stored_rows(settings: Settings, events: list[dict]) -> list[dict]:
    days = sorted({datetime.fromtimestamp(e["time"] / 1000, UTC).date() for e in events})
    table = Lake(settings.data_dir).read_days(ASSET, days)
    assert table is not None
    return table.to_pylist()


def rest_ids(feed: LiquidationFeed, settings: Settings, start: int, end: int) -> set[str]:
    """What the REST history holds for the configured coins and exchanges in [start, end)."""
    return {
        event_id(e.exchange, e.pair, e.time, e.price, e.side, e.usd_value)
        for coin in settings.symbols
        for exchange in settings.exchanges
        for e in feed.query(start, end, coin, exchange).events()
    }


def test_kill_9_mid_burst_restart_ingest_every_event_exactly_once(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed, settings: Settings
):
    feed.rate_per_s = 2_000
    small_segments = {"SIDECAR_SEGMENT_MAX_EVENTS": "300", "SIDECAR_SEGMENT_MAX_AGE_S": "0.05"}
    first: Sidecar = make_sidecar(**small_segments)
    first.wait_status(lambda s: s["events_written"] >= 3_000, 20, "3,000 events on disk")
    # A cascade on a coin the REST fill does not cover, so whatever of it survives the kill
    # can only have come from the spool.
    feed.burst("SOL", 20e6, 3_000)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(5)
    killed_at = now_ms()

    second: Sidecar = make_sidecar(**small_segments)
    second.wait_status(lambda s: s["subscribed"] and s["events_written"] > 0, 15, "a restart")
    feed.rate_per_s = 0
    code, _ = second.terminate()
    assert code == 0

    spooled, gaps = second.records()
    spooled_ids = {e["event_id"] for e in spooled}
    assert len(spooled_ids) >= 3_000
    [outage] = [g for g in gaps if g["reason"] == "sidecar was not running"]
    assert outage["end"] >= killed_at

    results = ingest_spool(settings)
    assert results, "the sensor requested no run"
    rows = stored_rows(settings, spooled)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    by_id = {r["event_id"]: r for r in rows}

    # Every event the sidecar made durable, before and after the kill, is stored once, as ws.
    assert spooled_ids <= by_id.keys()
    assert {i for i, r in by_id.items() if r["source"] == "ws"} == spooled_ids

    # The outage came back from REST; where REST repeats what the spool holds, the spool wins.
    expected_rest = rest_ids(feed, settings, outage["start"], outage["end"])
    overlap = expected_rest & spooled_ids
    rest_only = expected_rest - spooled_ids
    assert overlap, "the gap's safety margin should overlap events the spool already holds"
    assert rest_only, "the outage should have missed some events"
    assert expected_rest <= by_id.keys()
    assert {by_id[i]["source"] for i in rest_only} == {"rest"}
    assert {by_id[i]["source"] for i in overlap} == {"ws"}
    metadata = [r.get_asset_materialization_events()[0].materialization.metadata for r in results]
    assert sum(m["duplicates_skipped"].value for m in metadata) >= len(overlap)
    assert sum(m["unfillable_gaps"].value for m in metadata) == 0
    checks = [c for r in results for c in r.get_asset_check_evaluations()]
    assert checks
    assert all(c.passed for c in checks)


def test_ingesting_the_spool_again_adds_nothing(
    make_sidecar, ws_sim: WsSimulator, feed: LiquidationFeed, settings: Settings
):
    sidecar: Sidecar = make_sidecar()
    sidecar.wait_status(lambda s: s["events_written"] >= 200, 15, "200 events on disk")
    feed.rate_per_s = 0
    assert sidecar.terminate()[0] == 0
    spooled, _ = sidecar.records()
    ingest_spool(settings)
    before = stored_rows(settings, spooled)
    assert ingest_spool(settings) == []  # everything is recorded as ingested
    # Without the record (moved aside), everything is requested again: no harm done.
    Path(IngestedRanges(Lake(settings.data_dir), ASSET).where).unlink()
    [again] = ingest_spool(settings)
    meta = again.get_asset_materialization_events()[0].materialization.metadata
    assert meta["added"].value == 0
    assert meta["duplicates_skipped"].value == len(spooled)
    assert sorted(r["event_id"] for r in stored_rows(settings, spooled)) == sorted(
        r["event_id"] for r in before
    )
    assert len(before) == len(spooled) >= 200
