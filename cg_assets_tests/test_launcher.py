"""The launcher's port choice: the preferred port when free, else (or for 0) a free one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from cg_assets.launcher import free_port, prepare_dagster_home
from cg_assets.storage.event_log import BatchingSqliteEventLogStorage


def test_a_free_preferred_port_is_kept_and_a_busy_one_replaced():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = free_port(taken)
        assert other not in (taken, 0)
    assert free_port(taken) == taken  # released: free again


def test_zero_means_any_free_port():
    port = free_port(0)
    assert port > 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


STUBBORN = (
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN);"
    "print('child up', flush=True); time.sleep(120)"
)
LAUNCH = f"""
import sys
from pathlib import Path
from cg_assets.launcher import Launcher
with Launcher({{}}, Path(sys.argv[1])) as launcher:
    child = launcher.spawn("stubborn", [sys.executable, "-c", {STUBBORN!r}])
    print(child.pid, flush=True)
    launcher.wait()
"""


def test_a_second_ctrl_c_kills_what_ignores_the_first(tmp_path: Path):
    parent = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    log = tmp_path / "stubborn.log"
    deadline = time.monotonic() + 30
    while "child up" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    parent.send_signal(signal.SIGINT)  # the child ignores it: stop() now waits for it
    # Printed once a second Ctrl-C is armed to force the stop.
    assert [parent.stdout.readline().strip() for _ in range(2)] == [
        "",
        "stopping... (Ctrl-C again to kill at once)",
    ]
    parent.send_signal(signal.SIGINT)  # impatient user: force
    parent.wait(timeout=15)  # well before stop()'s own 20 s escalation
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_the_instance_config_fails_dead_runs_retries_crashes_and_prunes_ticks(tmp_path: Path):
    """`make demo` and `make run` both write this config: left alone for weeks, a run whose
    worker died must end as failed, and tick history must not grow without end."""
    home = prepare_dagster_home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_poll_interval_seconds == 30
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert "MONITORING" in instance.get_required_daemon_types()
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE):
            kept = instance.get_tick_retention_settings(kind)
            assert all(0 < days <= 7 for days in kept.values()), (kind, kept)
        assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] == 1
        # Backfills store their per-partition events in batches, where the default kept them.
        assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        assert Path(instance.event_log_storage._base_dir) == (home / "history" / "runs").resolve()
