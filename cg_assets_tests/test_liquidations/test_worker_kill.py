"""Ingestion under the real daemon survives its run workers dying or hanging.

Everything real: the simulator's WebSocket and REST sides over one feed, the sidecar as a
process, and `dagster dev` (webserver, daemon, code server) started through
`cg_assets.launcher` on the instance config `make demo` and `make run` write, with the spool
sensor ticking every 5 s. Twice an ingestion run is caught in its gap fill (the REST side is
slowed down for that) and its worker is

- killed with SIGKILL: under `dagster dev` the code server sees its child die and marks the
  run failed, within KILLED_BOUND_S;
- frozen with SIGSTOP, standing in for a worker no launcher sweep notices: run monitoring
  fails the run once it outlives the job's `dagster/max_runtime` (INGEST_MAX_RUNTIME_S, 20 s
  here), within that plus the monitoring poll (30 s) and slack.

Each time the sensor must request the same segments again, and in the end every event the
sidecar made durable is in `liquidation_orders` exactly once, with the gaps refilled.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest

from cg_assets.launcher import prepare_dagster_home
from cg_assets.liquidations import INGEST_JOB
from cg_assets.liquidations.assets import ASSET
from cg_assets.liquidations.gapfill import ORDER_PATH
from cg_assets.settings import Settings
from cg_assets.sim import LiquidationFeed, SimulatorServer, SyntheticMarket, WsSimulator
from cg_assets.storage import IngestedRanges, Lake
from cg_assets_tests.sidecar_harness import REPO, Sidecar
from ws_sidecar.parse import event_id
from ws_sidecar.spool import list_segments

pytestmark = pytest.mark.slow

T = TypeVar("T")
# The bounds this test holds the product to (README, "Unattended operation").
KILLED_BOUND_S = 10.0
MAX_RUNTIME_S = 20
MONITORING_POLL_S = 30
HUNG_BOUND_S = MAX_RUNTIME_S + MONITORING_POLL_S + 15
PID_RE = re.compile(r"Executing steps in process \(pid: (\d+)\)")

DAGSTER_DEV = """
import os, sys
from pathlib import Path
from cg_assets.launcher import Launcher, free_port
with Launcher(dict(os.environ), Path(sys.argv[1])) as launcher:
    print("ui", launcher.start_dagster(free_port(0)), flush=True)
    launcher.wait()
"""


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def sim(market: SyntheticMarket, feed: LiquidationFeed) -> Iterator[SimulatorServer]:
    """The REST side over the same feed the WebSocket simulator pushes."""
    with SimulatorServer(market, plan="professional", require_key=False, feed=feed) as server:
        yield server


@pytest.fixture
def dagster_home(settings: Settings) -> Path:
    return prepare_dagster_home(settings.data_dir)


@pytest.fixture
def dagster_dev(
    env: dict[str, str], settings: Settings, dagster_home: Path
) -> Iterator[subprocess.Popen]:
    """`dagster dev` through the product's launcher; SIGINT stops its whole process group."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("CG_", "TELEGRAM_"))}
    child_env.update(env)
    child_env.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            "CG_SIDECAR": "on",
            "INGEST_INTERVAL_S": "5",
            "INGEST_RETRY_BACKOFF_S": "5",
            "INGEST_MAX_RUNTIME_S": str(MAX_RUNTIME_S),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", DAGSTER_DEV, str(settings.data_dir)],
        env=child_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        wait_for(lambda: proc.stdout.readline().startswith("ui "), 240, "dagster dev")
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(90)


class Runs:
    """The ingestion runs as the daemon records them (the instance's SQLite storage)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def all(self) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(job_name=INGEST_JOB)))

    def get(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def started(self) -> dg.DagsterRun | None:
        return next((r for r in self.all() if r.status == dg.DagsterRunStatus.STARTED), None)

    def worker_pid(self, run_id: str) -> int | None:
        for entry in self.instance.all_logs(run_id):
            found = PID_RE.search(entry.message or "")
            if found:
                return int(found.group(1))
        return None

    def in_flight(self) -> bool:
        return any(not r.is_finished for r in self.all())


def first_seq(run: dg.DagsterRun) -> int:
    return run.run_config["ops"][ASSET]["config"]["first_seq"]


def catch_in_gap_fill(runs: Runs, sim: SimulatorServer, ws_sim: WsSimulator) -> dg.DagsterRun:
    """Make the next batch record a gap whose REST fill is slow (3 s an answer), and return
    the ingestion run once it is inside that fill."""
    sim.faults.update({"latency_s": 3.0})
    before = sim.stats.by_path[ORDER_PATH]
    ws_sim.faults.close_connections()

    def filling() -> dg.DagsterRun | None:
        run = runs.started()
        return run if run and sim.stats.by_path[ORDER_PATH] > before else None

    return wait_for(filling, 120, "an ingestion run in its gap fill")


def stuck_in_gap_fill(runs: Runs, sim: SimulatorServer, ws_sim: WsSimulator) -> dg.DagsterRun:
    """Make the next batch record a gap whose REST fill hangs (a minute an answer), and return
    the ingestion run that started after it."""
    sim.faults.update({"latency_s": 60.0})
    since = time.time()
    ws_sim.faults.close_connections()

    def stuck() -> dg.DagsterRun | None:
        for record in runs.instance.get_run_records(
            dg.RunsFilter(job_name=INGEST_JOB, statuses=[dg.DagsterRunStatus.STARTED])
        ):
            if record.create_timestamp.timestamp() > since + 1:
                return record.dagster_run
        return None

    return wait_for(stuck, 120, "an ingestion run started after the disconnect")


def wait_ended(runs: Runs, run: dg.DagsterRun, bound_s: float) -> dg.DagsterRunStatus:
    """How the run ended, failing the test if it is not over within `bound_s`."""
    ended = wait_for(
        lambda: (r := runs.get(run.run_id)).is_finished and r, bound_s, "the run to end"
    )
    return ended.status


def wait_retried(runs: Runs, failed: dg.DagsterRun) -> dg.DagsterRun:
    """The later run that takes the failed run's segments again, once it succeeded."""

    def retried() -> dg.DagsterRun | None:
        for run in runs.all():
            if (
                run.run_id != failed.run_id
                and first_seq(run) == first_seq(failed)
                and run.status == dg.DagsterRunStatus.SUCCESS
            ):
                return run
        return None

    return wait_for(retried, 120, f"a successful retry of segments from #{first_seq(failed)}")


def test_dead_and_hung_run_workers_lose_no_event_and_wedge_nothing(
    make_sidecar: Callable[..., Sidecar],
    ws_sim: WsSimulator,
    sim: SimulatorServer,
    feed: LiquidationFeed,
    settings: Settings,
    dagster_home: Path,
    dagster_dev: subprocess.Popen,
):
    sidecar = make_sidecar(SIDECAR_SEGMENT_MAX_EVENTS="2000")
    sidecar.wait_subscribed(30)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = Runs(instance)
        wait_for(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs.all()),
            180,
            "a first successful ingestion",
        )

        # 1. kill -9: the code server marks the run failed; the sensor requests it again.
        killed = catch_in_gap_fill(runs, sim, ws_sim)
        pid = wait_for(lambda: runs.worker_pid(killed.run_id), 10, "the run worker's pid")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_ended(runs, killed, KILLED_BOUND_S) == dg.DagsterRunStatus.FAILURE
        print(f"kill -9: run marked FAILURE {time.monotonic() - killed_at:.1f} s after")
        sim.faults.clear()
        retry = wait_retried(runs, killed)
        assert retry.tags["cg/ingest_attempt"] == "2"

        # 2. a hung worker: only run monitoring can end it (max_runtime); then the sensor,
        # which waits while an ingestion is in flight, goes on.
        hung = stuck_in_gap_fill(runs, sim, ws_sim)
        hung_since = time.monotonic()
        ended = wait_ended(runs, hung, HUNG_BOUND_S)
        assert ended in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        print(f"hung run {ended.value} {time.monotonic() - hung_since:.1f} s after it started")
        sim.faults.clear()
        wait_retried(runs, hung)

        # Stop the feed and the sidecar; the spool is now final. Ingestion drains it.
        feed.rate_per_s = 0
        assert sidecar.terminate()[0] == 0
        segments = [s.seq for s in list_segments(sidecar.spool)]
        record = IngestedRanges(Lake(settings.data_dir), ASSET)
        wait_for(
            lambda: record.ranges() == [(0, segments[-1])] and not runs.in_flight(),
            120,
            f"segments 0..{segments[-1]} recorded as ingested",
        )
        assert not [r for r in runs.all() if "dagster/parent_run_id" in r.tags]

    spooled, gaps = sidecar.records()
    spooled_ids = {e["event_id"] for e in spooled}
    lake = Lake(settings.data_dir)
    table = lake.read_days(ASSET, lake.days(ASSET))
    assert table is not None
    ids = table.column("event_id").to_pylist()
    sources = dict(zip(ids, table.column("source").to_pylist(), strict=True))
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert {i for i, s in sources.items() if s == "ws"} == spooled_ids
    disconnects = [g for g in gaps if g["reason"] != "sidecar was not running"]
    assert len(disconnects) >= 2
    refilled = {
        event_id(e.exchange, e.pair, e.time, e.price, e.side, e.usd_value)
        for g in disconnects
        for coin in settings.symbols
        for exchange in settings.exchanges
        for e in feed.query(g["start"], g["end"], coin, exchange).events()
    }
    assert refilled - spooled_ids, "the disconnects should have missed some events"
    assert refilled <= set(ids)
