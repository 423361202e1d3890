import dataclasses
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from cg_assets.definitions import build_defs
from cg_assets.liquidations import INGEST_JOB
from cg_assets.settings import Settings
from cg_assets.sim import TelegramServer
from cg_assets.sim.telegram import DEFAULT_CHAT_ID, DEFAULT_TOKEN
from cg_assets_tests.test_liquidations.conftest import day_ms, gap, write_segment, ws_event


def utc_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def tick(defs: dg.Definitions, name: str, cursor: str | None, instance: dg.DagsterInstance):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        cursor=cursor, instance=instance, definitions=defs, resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def run_request(defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance):
    """What the daemon does with a request: a run of the ingest job with its config and tags."""
    return defs.resolve_job_def(INGEST_JOB).execute_in_process(
        run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key},
        instance=instance,
        raise_on_error=False,
    )


def test_spool_sensor_requests_what_is_not_recorded_as_ingested(settings: Settings, spool: Path):
    defs = build_defs(settings)
    t = day_ms(1)
    for seq in range(3):
        write_segment(spool, seq, [ws_event(t + seq * 1000 + i, i) for i in range(5)])
    with dg.instance_for_test() as instance:
        first = tick(defs, "liquidation_spool_sensor", None, instance)
        [request] = first.run_requests
        assert request.run_key == "spool-0-2"
        assert request.run_config["ops"]["liquidation_orders"]["config"] == {
            "first_seq": 0,
            "last_seq": 2,
        }
        assert request.tags["dagster/asset_partition_range_end"] == utc_day(t).isoformat()
        # Requested is not ingested: until a run stores the batch, it is asked for again.
        [again] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
        assert again.run_key == "spool-0-2"
        run = run_request(defs, request, instance)
        assert run.success
        assert run.dagster_run.tags["dagster/max_retries"] == "0"
        # The run checks what it wrote; the sidecar's health is the health sensor's business.
        checks = sorted(c.check_name for c in run.get_asset_check_evaluations())
        assert checks == ["schema", "unique_event_id", "valid_values"]
        idle = tick(defs, "liquidation_spool_sensor", None, instance)
        assert idle.skip_message == "every spool segment is recorded as ingested"
        write_segment(spool, 3, [ws_event(t + 9000, 1)])
        [later] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
        # The key names the run it follows, so a range asked for again is a new run.
        assert later.run_key == f"spool-3-3-after-{run.run_id[:8]}"


def test_a_batch_is_capped_by_records(env: dict[str, str], spool: Path):
    settings = Settings.from_env({**env, "INGEST_MAX_EVENTS": "10"})
    defs = build_defs(settings)
    t = day_ms(1)
    write_segment(spool, 0, [ws_event(t + i, i) for i in range(4)])
    write_segment(spool, 1, [ws_event(t + 10 + i, i) for i in range(4)])
    write_segment(spool, 2, [ws_event(t + 20 + i, i) for i in range(4)])
    with dg.instance_for_test() as instance:
        [request] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
        assert request.run_key == "spool-0-1"  # a third segment would make 12 records
        assert run_request(defs, request, instance).success
        write_segment(spool, 3, [ws_event(t + 30 + i, i) for i in range(25)])
        [request] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
        # A segment over the cap still goes, alone; the cap bounds, it never blocks.
        assert request.run_key.startswith("spool-2-2-")
        assert run_request(defs, request, instance).success
        [request] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
        assert request.run_key.startswith("spool-3-3-")


def test_the_spool_sensor_ticks_at_the_ingestion_cadence(env: dict[str, str]):
    for cadence in ("60", "300"):
        defs = build_defs(Settings.from_env({**env, "INGEST_INTERVAL_S": cadence}))
        sensor = defs.resolve_sensor_def("liquidation_spool_sensor")
        assert sensor.minimum_interval_seconds == int(cadence)


def test_batch_spans_the_days_its_events_and_gaps_touch(settings: Settings, spool: Path):
    defs = build_defs(settings)
    old, new = day_ms(3, hour=23), day_ms(1, hour=1)
    write_segment(spool, 0, [ws_event(new, 0), gap(old, new), ws_event(new + 5, 1)])
    with dg.instance_for_test() as instance:
        [request] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == utc_day(old).isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == utc_day(new).isoformat()


def write_status(settings: Settings, age_s: float) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    status = {"connected": True, "updated_at": int((time.time() - age_s) * 1000)}
    (settings.data_dir / "sidecar_status.json").write_text(json.dumps(status))


def test_stale_sidecar_is_reported_once_per_incident(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    with TelegramServer(tokens=[DEFAULT_TOKEN], chats=[DEFAULT_CHAT_ID]) as standin:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", DEFAULT_TOKEN)
        monkeypatch.setenv("TELEGRAM_OPS_CHAT_ID", str(DEFAULT_CHAT_ID))
        tuned = dataclasses.replace(settings, telegram_api_base_url=standin.base_url)
        check_incident(build_defs(tuned), settings)
        stale, recovered = standin.wait_for_messages(2, timeout_s=10)
    assert "ws_sidecar is stale" in stale.plain
    assert "120 s ago" in stale.plain
    assert "ws_sidecar recovered" in recovered.plain


def check_incident(defs: dg.Definitions, settings: Settings) -> None:
    with dg.instance_for_test() as instance:
        write_status(settings, age_s=1)
        healthy = tick(defs, "sidecar_health_sensor", None, instance)
        assert "still fresh" in healthy.skip_message
        write_status(settings, age_s=120)
        incident = tick(defs, "sidecar_health_sensor", "fresh", instance)
        [evaluation] = incident.asset_events
        assert (evaluation.check_name, evaluation.passed) == ("sidecar_fresh", False)
        assert "120 s ago" in evaluation.metadata["reason"].value
        assert incident.cursor == "stale"
        assert tick(defs, "sidecar_health_sensor", "stale", instance).skip_message.startswith(
            "sidecar still stale"
        )
        write_status(settings, age_s=0)
        recovered = tick(defs, "sidecar_health_sensor", "stale", instance)
        assert [e.passed for e in recovered.asset_events] == [True]


def test_missing_status_file_counts_as_stale(settings: Settings):
    defs = build_defs(settings)
    with dg.instance_for_test() as instance:
        result = tick(defs, "sidecar_health_sensor", None, instance)
    [evaluation] = result.asset_events
    assert "is `python -m ws_sidecar` running?" in evaluation.metadata["reason"].value


def test_spool_sensor_waits_while_an_ingestion_is_in_flight(settings: Settings, spool: Path):
    defs = build_defs(settings)
    write_segment(spool, 0, [ws_event(day_ms(1), 0)])
    with dg.instance_for_test() as instance:
        running = instance.add_run(
            dg.DagsterRun(job_name=INGEST_JOB, status=dg.DagsterRunStatus.STARTED)
        )
        waiting = tick(defs, "liquidation_spool_sensor", None, instance)
        assert not waiting.run_requests
        assert "1 segment(s) wait for the running ingestion" in waiting.skip_message
        write_segment(spool, 1, [ws_event(day_ms(1) + 5, 1)])
        instance.report_run_canceled(running)
        # Canceled is not failed: no back-off, and what waited goes in one batch.
        [request] = tick(defs, "liquidation_spool_sensor", None, instance).run_requests
        assert request.run_key == f"spool-0-1-after-{running.run_id[:8]}"


@pytest.mark.parametrize(
    "why",
    [
        {"CG_PLAN": "hobbyist", "CG_INTERVAL": "4h"},  # no WebSocket: `make run` starts none
        {"CG_SIDECAR": "off"},  # the launcher says it did not start one
    ],
)
def test_no_sidecar_health_where_no_sidecar_is_expected(
    env: dict[str, str], why: dict[str, str], settings: Settings
):
    defs = build_defs(Settings.from_env({**env, **why}))
    sensors = [s.name for s in defs.sensors or []]
    assert "sidecar_health_sensor" not in sensors
    assert "liquidation_spool_sensor" in sensors
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert "sidecar_fresh" not in checks
    assert "unique_event_id" in checks
    # Where one is expected (the default: a plan with the WebSocket), it is watched.
    expected = build_defs(settings)
    assert "sidecar_health_sensor" in [s.name for s in expected.sensors or []]
