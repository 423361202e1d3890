"""A failed ingestion run loses nothing: its segments stay pending (and on disk) until a later
run stores them, the sensor requests them again after a back-off, and the ops chat hears of
a streak of failures once, and of the recovery once.

The sensor's clock is injected, so back-off is tested by moving time, not by sleeping.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cg_assets.definitions import build_resources
from cg_assets.liquidations import INGEST_JOB, build_liquidation_defs
from cg_assets.liquidations.assets import ASSET, build_liquidation_assets
from cg_assets.resources import CoinGlassResource
from cg_assets.settings import Settings
from cg_assets.sim import LiquidationFeed, SimulatorServer, SyntheticMarket, TelegramServer
from cg_assets.sim.telegram import DEFAULT_CHAT_ID, DEFAULT_TOKEN
from cg_assets.storage import IngestedRanges, Lake
from cg_assets_tests.test_liquidations.conftest import day_ms, gap, write_segment, ws_event
from ws_sidecar.spool import list_segments


@pytest.fixture
def t() -> int:
    """The first event's time: yesterday noon."""
    return day_ms(1)


@pytest.fixture
def sim(market: SyntheticMarket, t: int) -> Iterator[SimulatorServer]:
    """The REST order history holds orders around `t`, so a gap there is refilled."""
    feed = LiquidationFeed(market, seed=5, rate_per_s=5, clock=lambda: t - 60_000)
    feed.advance(t + 120_000)
    with SimulatorServer(market, plan="professional", require_key=False, feed=feed) as server:
        yield server


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def liquidation_defs(settings: Settings, clock: Clock) -> dg.Definitions:
    """The liquidations domain with the product's resources, except that CoinGlass errors are
    not retried inside a run (so a REST fault fails the run at once)."""
    resources = {
        **build_resources(settings),
        "coinglass": CoinGlassResource(
            base_url=settings.api_base_url, plan=settings.plan.value, max_attempts=1
        ),
    }
    return dg.Definitions.merge(
        build_liquidation_defs(settings, clock=clock), dg.Definitions(resources=resources)
    )


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("liquidation_spool_sensor")
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def launch(
    defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(INGEST_JOB).execute_in_process(
        run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key},
        instance=instance,
        raise_on_error=False,
    )


def ended(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None
    assert record.end_time is not None
    return record.end_time


def stored_ids(settings: Settings) -> list[str]:
    lake = Lake(settings.data_dir)
    table = lake.read_days(ASSET, lake.days(ASSET))
    assert table is not None
    return table.column("event_id").to_pylist()


def test_a_failed_batch_is_requested_again_and_nothing_is_pruned_before_it_is_stored(
    settings: Settings, spool: Path, sim: SimulatorServer, t: int
):
    events = [ws_event(t + i * 10, i) for i in range(40)]
    paths = [
        write_segment(spool, 0, events[:10]),
        write_segment(spool, 1, [*events[10:20], gap(t + 5_000, t + 65_000)]),
        write_segment(spool, 2, events[20:30]),
    ]
    week_ago = time.time() - 8 * 86_400  # past SPOOL_RETENTION_DAYS: prunable once stored
    for path in paths:
        os.utime(path, (week_ago, week_ago))
    write_segment(spool, 3, events[30:35])
    clock = Clock(time.time())
    defs = liquidation_defs(settings, clock)
    record = IngestedRanges(Lake(settings.data_dir), ASSET)
    with dg.instance_for_test() as instance:
        [request] = tick(defs, instance).run_requests
        assert request.run_key == "spool-0-3"
        sim.faults.update({"error_5xx_rate": 1.0})  # the gap fill of segment 1 fails
        failed = launch(defs, request, instance)
        assert not failed.success
        assert record.ranges() == []

        # A run of a later range succeeds meanwhile (a manual materialization): retention
        # must not take the segments the failed run never stored.
        write_segment(spool, 4, events[35:])
        orders, _ = build_liquidation_assets(settings)
        day = request.tags["dagster/asset_partition_range_end"]
        later = dg.materialize(
            [orders],
            resources=build_resources(settings),
            instance=instance,
            run_config={"ops": {ASSET: {"config": {"first_seq": 4, "last_seq": 4}}}},
            tags={
                "dagster/asset_partition_range_start": day,
                "dagster/asset_partition_range_end": day,
            },
        )
        assert later.success
        assert [s.seq for s in list_segments(spool)] == [0, 1, 2, 3, 4]

        # Within the back-off the batch waits; after it, the same range is requested again,
        # as a new run.
        clock.now = ended(instance, failed.run_id) + 30
        waiting = tick(defs, instance)
        assert not waiting.run_requests
        assert "retried in 30 s" in waiting.skip_message
        clock.now += 31
        [retry] = tick(defs, instance).run_requests
        config = retry.run_config["ops"][ASSET]["config"]
        assert (config["first_seq"], config["last_seq"]) == (0, 3)
        assert retry.run_key == f"spool-0-3-after-{failed.run_id[:8]}"
        assert retry.tags["cg/ingest_attempt"] == "2"

        sim.faults.clear()
        assert launch(defs, retry, instance).success
    assert record.ranges() == [(0, 4)]
    ids = stored_ids(settings)
    assert len(ids) == len(set(ids))
    assert {e["event_id"] for e in events} <= set(ids)
    assert len(ids) > len(events)  # the gap came back from REST as well
    # Stored, so now the old segments go; the recent one and the newest stay.
    assert [s.seq for s in list_segments(spool)] == [3, 4]


def test_failures_back_off_and_page_ops_once_per_streak(
    env: dict[str, str], spool: Path, monkeypatch: pytest.MonkeyPatch
):
    write_segment(spool, 0, [ws_event(day_ms(1), 0)])
    with TelegramServer(tokens=[DEFAULT_TOKEN], chats=[DEFAULT_CHAT_ID]) as standin:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", DEFAULT_TOKEN)
        monkeypatch.setenv("TELEGRAM_OPS_CHAT_ID", str(DEFAULT_CHAT_ID))
        settings = dataclasses.replace(
            Settings.from_env({**env, "INGEST_ALERT_AFTER_FAILURES": "2"}),
            telegram_api_base_url=standin.base_url,
        )
        clock = Clock(time.time())
        defs = liquidation_defs(settings, clock)
        with dg.instance_for_test() as instance:

            def fail_a_run() -> str:
                run = instance.add_run(dg.DagsterRun(job_name=INGEST_JOB))
                instance.report_run_failed(run)
                return run.run_id

            first = fail_a_run()
            clock.now = ended(instance, first) + 59
            assert "retried in 1 s" in tick(defs, instance).skip_message
            assert standin.messages() == []  # one failure pages nobody
            clock.now += 2
            assert tick(defs, instance).run_requests

            second = fail_a_run()
            clock.now = ended(instance, second) + 119  # two in a row: twice the wait
            assert "2 ingestion run(s) in a row failed" in tick(defs, instance).skip_message
            assert "retried in 1 s" in tick(defs, instance).skip_message
            [failing] = standin.messages()  # two ticks saw the streak, one message went out
            assert "liquidation ingestion failing: 2 runs in a row" in failing.plain
            assert second in failing.plain
            clock.now += 2
            [request] = tick(defs, instance).run_requests
            assert launch(defs, request, instance).success
            assert tick(defs, instance).skip_message == (
                "every spool segment is recorded as ingested"
            )
            tick(defs, instance)
    recovered = standin.messages()[1:]
    assert [m.plain.splitlines()[1] for m in recovered] == ["✅ liquidation ingestion recovered"]
