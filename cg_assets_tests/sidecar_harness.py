"""A pytest plugin (loaded by the top-level conftest): the WebSocket simulator in-process and
the real sidecar as a subprocess, for the sidecar's tests and the liquidation pipeline's.

The sidecar runs exactly as deployed (`python -m ws_sidecar`), with short timers from the
environment, and tests watch it from outside: its status file, its health server, its spool
and its captured output. Waits poll with deadlines; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cg_assets.sim import LiquidationFeed, SyntheticMarket, WsSimulator
from ws_sidecar.spool import list_segments, read_segment

REPO = Path(__file__).resolve().parents[1]

# Short timers so that reconnects and timeouts happen within a test's few seconds.
FAST_TIMERS = {
    "SIDECAR_PING_INTERVAL_S": "0.5",
    "SIDECAR_PONG_TIMEOUT_S": "1",
    "SIDECAR_WATCHDOG_S": "3",
    "SIDECAR_BACKOFF_BASE_S": "0.1",
    "SIDECAR_BACKOFF_CAP_S": "0.4",
    "SIDECAR_STATUS_INTERVAL_S": "0.1",
    "SIDECAR_SEGMENT_MAX_AGE_S": "0.2",
}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Sidecar:
    """One `python -m ws_sidecar` process; its stdout and stderr go to `log_path`."""

    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    def start(self) -> Sidecar:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ws_sidecar"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.data_dir / "sidecar_status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def wait_status(self, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict:
        def check() -> dict | None:
            self.assert_running()
            status = self.status()
            return (
                status if status and status.get("pid") == self.pid and predicate(status) else None
            )

        return wait_until(check, timeout, what)

    def wait_subscribed(self, timeout: float = 10.0) -> dict:
        return self.wait_status(lambda s: s["subscribed"], timeout, "the sidecar to subscribe")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"sidecar exited with {self.proc.returncode}:\n{self.log()[-3000:]}")

    @property
    def health_url(self) -> str:
        found = wait_until(
            lambda: re.search(
                rf"started \(pid {self.pid}\).*health (http://[\d.]+:\d+)/health/ready", self.log()
            ),
            10,
            "the health URL in the log",
        )
        return found.group(1)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.health_url + path, timeout=5)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def records(self) -> tuple[list[dict], list[dict]]:
        """Every event and gap in the published segments, in seq order."""
        events: list[dict] = []
        gaps: list[dict] = []
        for segment in list_segments(self.spool):
            contents = read_segment(segment.path)
            events += contents.events
            gaps += contents.gaps
        return events, gaps


@pytest.fixture
def feed(market: SyntheticMarket) -> LiquidationFeed:
    """200 events/s; the session's market, whose minute grid is generated only once."""
    return LiquidationFeed(market, seed=3, rate_per_s=200)


@pytest.fixture
def ws_sim(feed: LiquidationFeed) -> Iterator[WsSimulator]:
    with WsSimulator(feed, require_key=False) as sim:
        yield sim


@pytest.fixture
def sidecar_env(ws_sim: WsSimulator, tmp_path: Path) -> dict[str, str]:
    """Environment for a sidecar against `ws_sim`; tests add or override variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CG_", "SIDECAR_"))}
    env.update(FAST_TIMERS)
    env.update(
        {
            "CG_WS_URL": ws_sim.url,
            "CG_DATA_DIR": str(tmp_path / "data"),
            "SIDECAR_HEALTH_PORT": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    return env


@pytest.fixture
def make_sidecar(sidecar_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Start sidecars (all sharing one data directory and log); killed at teardown."""
    started: list[Sidecar] = []

    def make(**overrides: str) -> Sidecar:
        env = {**sidecar_env, **overrides}
        sidecar = Sidecar(env, Path(env["CG_DATA_DIR"]), tmp_path / "sidecar.log").start()
        started.append(sidecar)
        return sidecar

    yield make
    for sidecar in started:
        sidecar.kill()
