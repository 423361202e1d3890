"""Starting and stopping the product's processes: shared by `make demo` and `make run`.

Each child runs in its own session with SIGINT/SIGTERM restored to their defaults, because a
`dagster dev` started from a script or in the background otherwise inherits ignored signals
and cannot be stopped cleanly. Stopping sweeps each child's whole process group, since
`dagster dev` can exit before the code servers and daemon it spawned.

Nothing here knows about the simulator (its environment is `cg_assets.demo.simulator_env`), so
`make run` against the real endpoints never loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cg_assets.storage.event_log import sqlite_instance_config

# Exec a command with SIGINT/SIGTERM reset to their defaults (see the module docstring).
EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys;"
    "signal.signal(signal.SIGINT, signal.SIG_DFL);"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL);"
    "os.execvp(sys.argv[1], sys.argv[1:])"
)

# Queued runs start within about a second; four at once keep a laptop responsive. Sensors
# are evaluated in parallel so that a slow tick (a backfill's spool batch) cannot delay the
# liquidation heads-up sensor's.
#
# Weeks unattended: run monitoring fails a run that did not start within 3 minutes, and one
# that outlives its `dagster/max_runtime` (ingestion: INGEST_MAX_RUNTIME_S), checking every
# 30 s; under `dagster dev` the code server itself marks a run whose worker died failed
# within a second. A run whose worker crashed (not one whose asset raised: those are the
# assets' own business) is retried once; the liquidation ingestion opts out, its sensor
# retries. Tick history is kept for a week (skipped ticks, the bulk, for a day) instead of
# forever, so Dagster's storage stays small.
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
retention:
  schedule:
    purge_after_days: 7
  sensor:
    purge_after_days:
      skipped: 1
      failure: 7
      success: 7
      started: 7
sensors:
  use_threads: true
  num_workers: 4
schedules:
  use_threads: true
  num_workers: 2
"""

BIN = Path(sys.executable).parent


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens on it, else (or for 0) any free loopback port."""
    with socket.socket() as sock:
        if preferred and sock.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_dagster_home(data_dir: Path) -> Path:
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # Backfill runs store their per-partition events in batches (cg_assets.storage.event_log);
    # JSON is YAML, so the entry is written as one flow mapping under its key.
    [(key, entry)] = sqlite_instance_config(str(home.resolve())).items()
    (home / "dagster.yaml").write_text(f"{DAGSTER_YAML}{key}: {json.dumps(entry)}\n")
    return home


def graphql(ui: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{ui}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Launcher:
    """The children of one `make demo` / `make run`; `with` stops them all on the way out."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Launcher:
        # Started from a script or in the background, this process may inherit ignored SIGINT;
        # make Ctrl-C and SIGTERM both take the orderly shutdown path.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        """Start `cmd` with its output in `<log_dir>/<name>.log`."""
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", EXEC_WITH_DEFAULT_SIGNALS, *cmd],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def wait_http(self, url: str, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(
                    f"{proc.args[3]} exited with {proc.returncode} before serving {url}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise SystemExit(f"{url} did not answer within {timeout_s:.0f}s")

    def start_dagster(self, ui_port: int) -> str:
        """`dagster dev` on the workspace; returns the UI URL once it answers."""
        dev = self.spawn(
            "dagster",
            [
                str(BIN / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(ui_port),
            ],
        )
        ui = f"http://127.0.0.1:{ui_port}"
        print("starting dagster dev (about 15 s)...")
        self.wait_http(f"{ui}/server_info", dev, 180)
        graphql(ui, "mutation { setNuxSeen }")
        return ui

    def start_schedules(self) -> None:
        subprocess.run(
            [str(BIN / "dagster"), "schedule", "start", "--start-all", "-w", "workspace.yaml"],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def wait(self, on_tick: Callable[[], None] | None = None) -> None:
        """Until Ctrl-C, or until a child dies (then the rest are stopped too); `on_tick`
        runs every second meanwhile."""
        try:
            while all(p.poll() is None for p in self.procs):
                if on_tick is not None:
                    on_tick()
                time.sleep(1)
            print("a child process exited; stopping the rest", file=sys.stderr)
        except KeyboardInterrupt:
            self._arm_force_stop()
            print("\nstopping... (Ctrl-C again to kill at once)", flush=True)

    def _arm_force_stop(self) -> None:
        """From now on Ctrl-C or SIGTERM kill every child's group instead of interrupting the
        orderly stop halfway (which would leave children running)."""

        def force(signum: int, frame: object) -> None:
            for proc in self.procs:
                _signal_group(proc.pid, signal.SIGKILL)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, force)
            signal.signal(signal.SIGTERM, force)

    def stop(self) -> None:
        """SIGINT each child's session, then sweep whatever of it outlives the leader,
        escalating to SIGKILL after a deadline, or at once on a second Ctrl-C."""
        self._arm_force_stop()
        procs = self.procs
        for proc in procs:
            _signal_group(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(_group_alive(p.pid) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)
        self.procs = []


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
