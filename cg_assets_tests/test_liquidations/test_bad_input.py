"""Bad input already on disk stops neither spool reader: a microsecond-stamped event is
skipped, and a real burst after it still fires and still lands in the table; and no content
of the spool, however broken, makes either sensor raise or the triggers run ahead of the
clock."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from cg_assets.alerts.headsup import SENSOR
from cg_assets.definitions import build_defs
from cg_assets.liquidations import INGEST_JOB
from cg_assets.liquidations.triggers import MINUTE_MS, TriggerState
from cg_assets.settings import Settings
from cg_assets.storage import Lake
from cg_assets_tests.conftest import days_ago
from cg_assets_tests.spool_fuzz import NOW_MS, segment_bytes, stamps
from cg_assets_tests.test_liquidations.conftest import write_segment, ws_event
from ws_sidecar.spool import summary_path
from ws_sidecar.summary import summarize

SPOOL_SENSOR = "liquidation_spool_sensor"


def tick(defs: dg.Definitions, name: str, cursor: str | None, instance: dg.DagsterInstance):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        cursor=cursor, instance=instance, definitions=defs, resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def test_a_microsecond_stamp_stops_neither_ingestion_nor_the_heads_up(
    settings: Settings, spool: Path
):
    defs = build_defs(settings)
    now = int(time.time() * 1000)
    minute = now // MINUTE_MS * MINUTE_MS
    poison = {**ws_event(minute, 0), "time": minute * 1000, "event_id": "poison"}
    burst = [
        {**ws_event(minute + i, i), "side": "long", "usd_value": 600_000.0} for i in range(10)
    ]  # $6M within the minute, no single order over $1M
    with dg.instance_for_test() as instance:
        start = tick(defs, SENSOR, None, instance)  # the heads-up starts at the spool's end
        write_segment(spool, 0, [poison, ws_event(minute + 50, 50)])
        after_poison = tick(defs, SENSOR, start.cursor, instance)
        assert TriggerState.from_cursor(after_poison.cursor).newest <= now
        burst_path = write_segment(spool, 1, burst)
        # The burst's segment has the summary the sidecar writes (it quarantined 3 items
        # meanwhile); the poisoned one is older, without: it is summarised from its lines.
        summary = summarize(burst, quarantined=3)
        summary_path(burst_path).write_text(summary.to_json())
        [headsup] = tick(defs, SENSOR, after_poison.cursor, instance).run_requests
        assert headsup.run_key == f"headsup-BTC-{minute}"

        [ingest] = tick(defs, SPOOL_SENSOR, None, instance).run_requests
        assert ingest.run_key == "spool-0-1"
        result = defs.resolve_job_def(INGEST_JOB).execute_in_process(
            run_config=ingest.run_config, instance=instance, tags=ingest.tags
        )
    assert result.success
    day = datetime.fromtimestamp(minute / 1000, UTC).date()
    rows = Lake(settings.data_dir).read_days("liquidation_orders", [day]).to_pylist()
    assert sorted(r["event_id"] for r in rows) == sorted(
        e["event_id"] for e in [ws_event(minute + 50, 50), *burst]
    )
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["invalid_in_spool"].value == 1
    assert meta["quarantined_in_sidecar"].value == 3


@pytest.fixture(scope="module")
def fuzz_defs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, dg.Definitions, dg.DagsterInstance]]:
    """Definitions over a data dir of their own, built once for every example."""
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    settings = Settings.from_env(
        {
            "CG_DATA_DIR": str(data_dir),
            "CG_API_BASE_URL": "http://127.0.0.1:9",  # never called: sensors only read files
            "CG_START_DATE": days_ago(30),
        }
    )
    with dg.instance_for_test() as instance:
        yield settings, build_defs(settings), instance


@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(
        st.tuples(segment_bytes(), st.none() | st.binary(max_size=60)), min_size=1, max_size=4
    ),
    newest=st.one_of(st.just(0), stamps(NOW_MS).filter(lambda t: 0 <= t < 2**53)),
)
def test_no_spool_content_makes_a_sensor_raise_or_run_ahead_of_the_clock(
    fuzz_defs: tuple[Settings, dg.Definitions, dg.DagsterInstance],
    segments: list[tuple[bytes, bytes | None]],
    newest: int,
):
    settings, defs, instance = fuzz_defs
    spool = settings.data_dir / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True)
    for seq, (data, summary) in enumerate(segments):
        path = spool / f"seg-{seq:012d}.jsonl"
        path.write_bytes(data)
        if summary is not None:
            summary_path(path).write_bytes(summary)

    # A cursor that may already be poisoned: its newest minute anywhere, even years ahead.
    cursor = TriggerState(seq=-1, newest=newest - newest % MINUTE_MS).to_cursor()
    headsup = tick(defs, SENSOR, cursor, instance)
    now = int(time.time() * 1000)
    state = TriggerState.from_cursor(headsup.cursor)
    assert state.seq == len(segments) - 1
    assert state.newest <= now
    assert all(int(m) <= now for minutes in state.minutes.values() for m in minutes)
    assert all(r.run_config["ops"]["liquidation_alerts"]["config"]["minute"] <= now
               for r in headsup.run_requests)  # fmt: skip

    [ingest] = tick(defs, SPOOL_SENSOR, None, instance).run_requests
    start = date.fromisoformat(ingest.tags["dagster/asset_partition_range_start"])
    end = date.fromisoformat(ingest.tags["dagster/asset_partition_range_end"])
    assert settings.start_date <= start <= end <= datetime.now(UTC).date()
