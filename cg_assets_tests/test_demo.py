"""`make demo` for real: simulator + dagster dev + backfill, then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cg_assets.market.series import MARKET_ASSETS

pytestmark = pytest.mark.slow

RUNS = "{ runsOrError { ... on Runs { results { status tags { key value } } } } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backfill_runs(ui: str) -> list[str]:
    request = urllib.request.Request(
        f"{ui}/graphql",
        data=json.dumps({"query": RUNS}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.load(response)["data"]["runsOrError"]["results"]
    return [r["status"] for r in runs if any(t["key"] == "dagster/backfill" for t in r["tags"])]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def leftovers(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def test_demo_backfills_and_ctrl_c_stops_everything(tmp_path: Path):
    data_dir = tmp_path / "demo-data"
    ui_port, sim_port, ws_port, health_port = (free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CG_")}
    env["CG_DATA_DIR"] = str(data_dir)
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_assets.demo",
            "--ui-port",
            str(ui_port),
            "--sim-port",
            str(sim_port),
            "--ws-port",
            str(ws_port),
            "--sidecar-port",
            str(health_port),
            "--backfill-days",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    ui = f"http://127.0.0.1:{ui_port}"
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert any(f"{ui}/asset-groups" in line for line in lines), "".join(lines)
        statuses = wait_for(
            lambda: (s := backfill_runs(ui)) and all(x in {"SUCCESS", "FAILURE"} for x in s) and s,
            240,
            "the demo backfill run",
        )
        assert statuses == ["SUCCESS"]
        for asset in MARKET_ASSETS:
            assert len(list((data_dir / "lake" / asset.name).glob("date=*/part-0.parquet"))) == 3
        # The sidecar streams into the spool and the spool sensor turns it into the asset.
        wait_for(
            lambda: list((data_dir / "lake" / "liquidation_orders").glob("date=*/part-0.parquet")),
            120,
            "liquidation_orders from the spool",
        )
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)
    assert demo.returncode == 0
    assert leftovers(str(data_dir)) == []
    assert leftovers(f"--port {sim_port}") == []
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health/live", timeout=2)
