"""`make demo`: the simulator, `dagster dev`, a 7-day backfill and running schedules, in one go.

Everything lives under the data dir (lake, catalog, DAGSTER_HOME), so a second `make demo`
finds the data and run history of the first. Ctrl-C stops every process started here: each
child runs in its own session with default signal handlers restored, because a backgrounded
`dagster dev` otherwise inherits ignored SIGINT/SIGTERM and cannot be stopped cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cg_assets.market.series import MARKET_ASSETS

# Exec a command with SIGINT/SIGTERM reset to their defaults (see the module docstring).
EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys;"
    "signal.signal(signal.SIGINT, signal.SIG_DFL);"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL);"
    "os.execvp(sys.argv[1], sys.argv[1:])"
)

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
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def free_port(preferred: int) -> int:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(cmd: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else None  # noqa: SIM115 - the child owns the handle
    return subprocess.Popen(
        [sys.executable, "-c", EXEC_WITH_DEFAULT_SIGNALS, *cmd],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[3]} exited with {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f}s")


def graphql(ui: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{ui}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def launch_backfill(ui: str, days: int) -> str:
    today = datetime.now(UTC).date()
    partitions = [(today - timedelta(days=i)).isoformat() for i in range(days, -1, -1)]
    params = {
        "assetSelection": [{"path": [a.name]} for a in MARKET_ASSETS],
        "partitionNames": partitions,
        "fromFailure": False,
        "title": f"demo: last {days} days",
    }
    result = graphql(ui, LAUNCH_BACKFILL, {"params": params})["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"backfill was not launched: {result}")
    return f"{result['backfillId']} ({partitions[0]}..{partitions[-1]})"


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT each child's session, then sweep whatever of it outlives the leader (dagster dev
    can exit before the code servers it spawned), escalating to SIGKILL after a deadline."""
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    # Started from a script or in the background, this process may inherit ignored SIGINT;
    # make Ctrl-C and SIGTERM both take the orderly shutdown path below.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--sim-port", type=int, default=8765)
    parser.add_argument("--ws-port", type=int, default=8766)
    parser.add_argument("--sidecar-port", type=int, default=8790)
    parser.add_argument("--backfill-days", type=int, default=7)
    args = parser.parse_args(argv)

    data_dir = Path(os.environ.get("CG_DATA_DIR", "data")).resolve()
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    sim_port, ui_port = free_port(args.sim_port), free_port(args.ui_port)
    ws_port, health_port = free_port(args.ws_port), free_port(args.sidecar_port)
    sim_url, ui = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{ui_port}"
    health = f"http://127.0.0.1:{health_port}"
    env = {
        **os.environ,
        "CG_API_BASE_URL": sim_url,
        "CG_PLAN": "professional",
        "CG_DATA_DIR": str(data_dir),
        "CG_WS_URL": f"ws://127.0.0.1:{ws_port}/ws-api",
        "SIDECAR_HEALTH_PORT": str(health_port),
        "DAGSTER_HOME": str(home),
    }
    env.pop("CG_API_KEY", None)
    bin_dir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    try:
        sim = spawn(
            [
                str(bin_dir / "cg-sim"),
                *("--port", str(sim_port), "--ws-port", str(ws_port)),
                "--no-require-key",
            ],
            env,
            data_dir / "simulator.log",
        )
        procs.append(sim)
        wait_http(f"{sim_url}/api/futures/supported-coins", sim, 30)
        print(f"simulator      {sim_url}  (log: {data_dir / 'simulator.log'})")
        sidecar = spawn([sys.executable, "-m", "ws_sidecar"], env, data_dir / "sidecar.log")
        procs.append(sidecar)
        wait_http(f"{health}/health/live", sidecar, 30)
        print(f"ws_sidecar     {health}/health/ready  {health}/metrics")
        dev = spawn(
            [
                str(bin_dir / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(ui_port),
            ],
            env,
            data_dir / "dagster.log",
        )
        procs.append(dev)
        print("starting dagster dev (about 15 s)...")
        wait_http(f"{ui}/server_info", dev, 180)
        graphql(ui, "mutation { setNuxSeen }")
        print(f"backfill       {launch_backfill(ui, args.backfill_days)}")
        subprocess.run(
            [str(bin_dir / "dagster"), "schedule", "start", "--start-all", "-w", "workspace.yaml"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print("schedules      market_hourly_refresh, market_daily_finalize: running")
        print(f"\nDagster UI     {ui}/asset-groups")
        print(f"data dir       {data_dir}  (Parquet lake, warehouse.duckdb, dagster_home)")
        print(f"query          duckdb {data_dir / 'warehouse.duckdb'}")
        print(f"logs           {data_dir / 'dagster.log'}")
        print("\nCtrl-C stops everything.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("a child process exited; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping...")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
