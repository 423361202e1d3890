"""`cg-sim` as a process: announces its URLs, serves, and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from websockets.sync.client import connect

import cg_assets


def test_cli_serves_until_sigterm():
    root = str(Path(cg_assets.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_assets.sim.cli",
            "--port",
            "0",
            "--ws-port",
            "0",
            "--no-require-key",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        ws_url = proc.stdout.readline().strip()
        assert ws_url.startswith("ws://127.0.0.1:")
        assert ws_url.endswith("/ws-api")
        body = requests.get(base_url + "/api/futures/supported-coins", timeout=10).json()
        assert body["data"][0] == "BTC"
        with connect(ws_url, open_timeout=10) as ws:
            ws.send("ping")
            assert ws.recv(timeout=10) == "pong"
            # Another process controls the WebSocket's faults through the REST port.
            closed = requests.post(base_url + "/_sim/ws/close", timeout=10).json()
            assert closed == {"closed": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
