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
from cg_assets.storage import IngestedRanges, Lake
from cg_assets_tests.conftest import days_ago
from cg_assets_tests.test_liquidations.conftest import day_ms, gap, write_segment, ws_event


def ingest(settings: Settings, first: str, last: str, **config: int | bool):
    """One run of the asset over days first..last; `config` as the run config (first_seq,
    last_seq, reingest), the defaults being a manual run's."""
    orders, _ = build_liquidation_assets(settings)
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [orders],
            resources=build_resources(settings),
            instance=instance,
            run_config={"ops": {ASSET: {"config": config}}},
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


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    return result.get_asset_materialization_events()[0].materialization.metadata


def recorded(settings: Settings) -> list[tuple[int, int]]:
    return IngestedRanges(Lake(settings.data_dir), ASSET).ranges()


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
    meta = metadata(first)
    assert (meta["added"].value, meta["duplicates_skipped"].value) == (50, 10)
    assert recorded(settings) == [(0, 1)]
    # Nothing is pending now: a manual run takes nothing; a forced re-ingest adds nothing.
    idle = ingest(settings, day, day)
    assert (metadata(idle)["segments"].value, metadata(idle)["added"].value) == ("none", 0)
    again = ingest(settings, day, day, first_seq=0, reingest=True)
    assert metadata(again)["segments"].value == "0..1 (2)"
    assert (metadata(again)["added"].value, metadata(again)["duplicates_skipped"].value) == (0, 60)
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


def test_events_outside_the_run_range_are_stored_in_their_own_day(settings: Settings, spool: Path):
    a, b = day_ms(3), day_ms(2)
    write_segment(spool, 0, [ws_event(a, 0), ws_event(b, 1)])
    result = ingest(settings, day_of(b), day_of(b))
    assert result.success
    meta = metadata(result)
    assert meta["outside_range"].value == 1
    # Recorded as ingested, so the event must be stored already: it is, in its own day.
    assert recorded(settings) == [(0, 0)]
    assert [r["event_id"] for r in stored(settings, day_of(a))] == [f"e{a}-0"]
    assert [r["event_id"] for r in stored(settings, day_of(b))] == [f"e{b}-1"]


def test_events_before_the_first_partition_are_counted_not_stored(env: dict[str, str], spool: Path):
    settings = Settings.from_env({**env, "CG_START_DATE": days_ago(2)})
    early, kept = day_ms(5), day_ms(1)
    write_segment(spool, 0, [ws_event(early, 0), ws_event(kept, 1)])
    result = ingest(settings, day_of(kept), day_of(kept))
    assert result.success
    assert metadata(result)["before_start_date"].value == 1
    assert not Lake(settings.data_dir).files(ASSET, [datetime.fromisoformat(day_of(early)).date()])
    assert len(stored(settings, day_of(kept))) == 1


def test_a_manual_run_takes_a_bounded_batch_from_the_watermark(env: dict[str, str], spool: Path):
    settings = Settings.from_env({**env, "INGEST_MAX_EVENTS": "10"})
    t = day_ms(1)
    for seq in range(6):
        write_segment(spool, seq, [ws_event(t + seq * 100 + i, seq * 100 + i) for i in range(4)])
    day = day_of(t)
    first = ingest(settings, day, day, last_seq=1)  # as if an earlier batch took 0..1
    assert recorded(settings) == [(0, 1)]
    # The defaults: from the first segment not recorded, as many as 10 records allow.
    manual = ingest(settings, day, day)
    meta = metadata(manual)
    assert (meta["segments"].value, meta["segments_waiting"].value) == ("2..3 (2)", 2)
    assert meta["events_in_batch"].value == 8
    assert recorded(settings) == [(0, 3)]
    assert first.success
    assert len(stored(settings, day)) == 16


def test_gaps_on_a_plan_without_order_history_are_recorded_as_unfillable(
    env: dict[str, str], spool: Path, sim: SimulatorServer
):
    settings = Settings.from_env({**env, "CG_PLAN": "hobbyist", "CG_INTERVAL": "4h"})
    t = day_ms(1)
    write_segment(spool, 0, [ws_event(t, 0), gap(t + 10, t + 60_000), ws_event(t + 60_001, 1)])
    requests_before = sim.stats.requests
    result = ingest(settings, day_of(t), day_of(t))
    assert result.success
    meta = metadata(result)
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
    meta = metadata(result)
    assert meta["segments_pruned"].value == 2  # 0 and 1: ingested and past 7 days
    assert sorted(p.name for p in spool.iterdir()) == [paths[2].name, paths[3].name]
    assert len(stored(settings, day_of(t))) == 2  # the data itself stays


def test_retention_never_deletes_a_segment_that_is_not_recorded(settings: Settings, spool: Path):
    """A later batch (here 2..3) is stored while 0..1 are not: 0..1 stay, however old."""
    t = day_ms(2)
    paths = [write_segment(spool, seq, [ws_event(t + seq, seq)]) for seq in range(5)]
    week_ago = time.time() - 8 * 86_400
    for path in paths[:4]:
        os.utime(path, (week_ago, week_ago))
    result = ingest(settings, day_of(t), day_of(t), first_seq=2, last_seq=3)
    assert result.success
    assert metadata(result)["segments_pruned"].value == 0
    assert [p.name for p in sorted(spool.iterdir())] == [p.name for p in paths]
    assert recorded(settings) == [(2, 3)]
    # Once 0..1 are stored too, everything old goes (but the newest segment).
    ingest(settings, day_of(t), day_of(t))
    assert recorded(settings) == [(0, 4)]
    assert [p.name for p in spool.iterdir()] == [paths[4].name]
