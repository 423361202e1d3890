"""liquidation_orders end to end: spool segments in, Parquet and DuckDB out, gaps refilled."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from cg_assets.definitions import build_resources
from cg_assets.liquidations.assets import ASSET, build_liquidation_assets
from cg_assets.settings import Settings
from cg_assets.sim import SimulatorServer
from cg_assets.storage import Lake
from cg_assets_tests.test_liquidations.conftest import day_ms, gap, write_segment, ws_event


def ingest(settings: Settings, first: str, last: str, first_seq: int = 0, last_seq: int = -1):
    orders, _ = build_liquidation_assets(settings)
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [orders],
            resources=build_resources(settings),
            instance=instance,
            run_config={"ops": {ASSET: {"config": {"first_seq": first_seq, "last_seq": last_seq}}}},
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
            raise_on_error=False,
        )


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def stored(settings: Settings, day: str) -> list[dict]:
    table = Lake(settings.data_dir).read_days(ASSET, [datetime.fromisoformat(day).date()])
    return [] if table is None else table.to_pylist()


def test_segments_land_once_even_when_ingested_twice(settings: Settings, spool: Path):
    t = day_ms(2)
    events = [ws_event(t + i * 10, i) for i in range(50)]
    write_segment(spool, 0, events[:30])
    write_segment(spool, 1, events[20:])  # overlaps: a reconnect replayed 10 events
    day = day_of(t)
    first = ingest(settings, day, day)
    assert first.success
    rows = stored(settings, day)
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in events)
    meta = first.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["added"].value, meta["duplicates_skipped"].value) == (50, 10)
    again = ingest(settings, day, day)
    assert again.get_asset_materialization_events()[0].materialization.metadata["added"].value == 0
    assert len(stored(settings, day)) == 50
    assert [c.passed for c in first.get_asset_check_evaluations()] == [True, True, True]


def test_a_batch_is_limited_to_its_segments_and_split_by_day(settings: Settings, spool: Path):
    a, b = day_ms(3, hour=23), day_ms(2, hour=1)
    write_segment(spool, 0, [ws_event(a, 0), ws_event(b, 1)])
    write_segment(spool, 1, [ws_event(b + 1, 2)])
    result = ingest(settings, day_of(a), day_of(b), first_seq=0, last_seq=0)
    assert result.success
    assert [r["event_id"] for r in stored(settings, day_of(a))] == [f"e{a}-0"]
    assert [r["event_id"] for r in stored(settings, day_of(b))] == [f"e{b}-1"]


def test_events_outside_the_run_range_are_reported_not_lost(settings: Settings, spool: Path):
    a, b = day_ms(3), day_ms(2)
    write_segment(spool, 0, [ws_event(a, 0), ws_event(b, 1)])
    result = ingest(settings, day_of(b), day_of(b))
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["outside_range"].value == 1
    assert ingest(settings, day_of(a), day_of(a)).success
    assert len(stored(settings, day_of(a))) == 1


def test_gaps_on_a_plan_without_order_history_are_recorded_as_unfillable(
    env: dict[str, str], spool: Path, sim: SimulatorServer
):
    settings = Settings.from_env({**env, "CG_PLAN": "hobbyist", "CG_INTERVAL": "4h"})
    t = day_ms(1)
    write_segment(spool, 0, [ws_event(t, 0), gap(t + 10, t + 60_000), ws_event(t + 60_001, 1)])
    requests_before = sim.stats.requests
    result = ingest(settings, day_of(t), day_of(t))
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["unfillable_gaps"].value == 1
    [report] = meta["gaps"].value
    assert report["status"] == "unfillable"
    assert "needs the Standard plan (CG_PLAN=hobbyist)" in report["reason"]
    assert sim.stats.requests == requests_before  # nothing was asked of the API
    assert len(stored(settings, day_of(t))) == 2


def test_ingested_segments_past_retention_are_pruned(settings: Settings, spool: Path):
    t = day_ms(2)
    paths = [write_segment(spool, seq, [ws_event(t + seq, seq)]) for seq in range(4)]
    week_ago = time.time() - 8 * 86_400
    for path in paths[:3]:
        os.utime(path, (week_ago, week_ago))
    result = ingest(settings, day_of(t), day_of(t), first_seq=0, last_seq=1)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["segments_pruned"].value == 2  # 0 and 1: ingested and past 7 days
    assert sorted(p.name for p in spool.iterdir()) == [paths[2].name, paths[3].name]
    assert len(stored(settings, day_of(t))) == 2  # the data itself stays
