"""The whole system as a user meets it: `python -m cg_assets.demo` in a temporary data dir.

One demo serves the module: the simulator (REST, WebSocket, Telegram stand-in) with a cascade
story whose live episodes come every minute, the sidecar, and `dagster dev` (webserver and
daemon) with every schedule and sensor. The tests poll real state with deadlines: the
sidecar's health, Dagster's runs and asset graph over GraphQL, the lake, the DuckDB catalog
and the messages the stand-in received. At the end, Ctrl-C must leave no process behind.

The demo backfills the days before the newest bar's day, then refreshes that day's market data
as the hourly schedule does; no schedule or clock brings its snapshot, signals or digest, so
the digest of the newest bar proves that they follow the refresh by automation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pytest

from cg_assets_tests.processes import processes_with_env
from cg_assets_tests.test_definitions.test_defs import LINEAGE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
RUNS = """{ runsOrError { ... on Runs { results {
    runId jobName status creationTime endTime tags { key value } assetSelection { path }
} } } }"""
BACKFILLS = (
    "{ partitionBackfillsOrError { ... on PartitionBackfills { results { title status } } } }"
)
GRAPH = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"
GROUPS = ("market", "liquidations", "heatmaps", "signals", "alerts")
AUTOMATION = "automation_sensor"
# The schedules ran signals at HH:07, two minutes after the market refresh's HH:05 tick; the
# digest must now reach Telegram well within those two minutes of the refresh run's end.
DIGEST_DEADLINE_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    """Whether something accepts connections on the loopback `port`."""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str, body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll until `predicate` returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class System:
    data_dir: Path
    ports: dict[str, int]
    ui: str
    health: str
    standin: str
    proc: subprocess.Popen
    output: list[str]

    def graphql(self, query: str) -> dict:
        return get_json(f"{self.ui}/graphql", {"query": query})["data"]

    def all_runs(self) -> list[dict]:
        """Every run, oldest first, with its tags as a dict and its selected asset names."""
        runs = []
        for run in reversed(self.graphql(RUNS)["runsOrError"]["results"]):
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
            run["assets"] = {"/".join(a["path"]) for a in run["assetSelection"] or []}
            runs.append(run)
        return runs

    def runs(self, job: str) -> list[str]:
        return [r["status"] for r in self.all_runs() if r["jobName"] == job]

    def backfill_runs(self) -> list[str]:
        results = self.graphql(RUNS)["runsOrError"]["results"]
        return [
            r["status"] for r in results if any(t["key"] == "dagster/backfill" for t in r["tags"])
        ]

    def demo_backfill_done(self) -> str | None:
        """The demo backfill's final state, once it has one."""
        backfills = self.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"]
        [state] = [b["status"] for b in backfills if (b["title"] or "").startswith("demo:")]
        return None if state in {"REQUESTED", "CANCELING", "FAILING"} else state

    def messages(self) -> list[dict]:
        return get_json(f"{self.standin}/_sim/messages")

    def parquet_days(self, asset: str) -> list[Path]:
        return sorted((self.data_dir / "lake" / asset).glob("date=*/part-0.parquet"))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    data_dir = tmp_path_factory.mktemp("e2e") / "data"
    ports = {name: free_port() for name in ("ui", "sim", "ws", "telegram", "sidecar")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CG_", "TELEGRAM_"))}
    env["CG_DATA_DIR"] = str(data_dir)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_assets.demo",
            *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))),
            *("--backfill-days", "2", "--episode-every-min", "1"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    output: list[str] = []
    system = System(
        data_dir,
        ports,
        f"http://127.0.0.1:{ports['ui']}",
        f"http://127.0.0.1:{ports['sidecar']}",
        f"http://127.0.0.1:{ports['telegram']}",
        proc,
        output,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert any(f"{system.ui}/asset-groups" in line for line in output), "".join(output)
        yield system
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        output.append(rest)


def test_the_full_loop_from_the_wire_to_telegram(system: System):
    # The sidecar subscribed, and the spool sensor ingested what it wrote.
    wait_for(lambda: get_json(f"{system.health}/health/ready")["ready"], 60, "a ready sidecar")
    wait_for(lambda: "SUCCESS" in system.runs("liquidation_ingest_job"), 180, "an ingestion")
    # The two-day backfill of market, liquidations, heatmaps and signals finished cleanly.
    state = wait_for(system.demo_backfill_done, 480, "the demo backfill")
    assert state == "COMPLETED_SUCCESS", state
    statuses = system.backfill_runs()
    assert set(statuses) == {"SUCCESS"}, statuses
    assert list(system.data_dir.glob("lake/liquidation_heatmap/date=*/heatmap.png"))

    # Telegram: a heads-up, its confirmation in reply, and the digest of the signals.
    def seen() -> dict[str, dict] | None:
        messages = system.messages()
        headsups = {m["message_id"]: m for m in messages if "liquidation burst" in m["plain"]}
        confirmed = [
            m for m in messages if m["reply_to"] in headsups and " confirmed (" in m["plain"]
        ]
        digests = [
            m for m in messages if "not financial advice" in m["plain"] and not m["reply_to"]
        ]
        if not (confirmed and digests):
            return None
        return {"headsup": headsups[confirmed[0]["reply_to"]], "confirmed": confirmed[0]}

    found = wait_for(seen, 300, "a heads-up, a confirmed alert and a digest on Telegram")
    assert "cascade" in found["headsup"]["plain"] or "squeeze" in found["headsup"]["plain"]
    assert found["confirmed"]["plain"].startswith("✅")
    # The backfilled days and the refreshed newest day, whose signals came by automation.
    market = {p.parent.name for p in system.parquet_days("price_ohlc")}
    assert len(market) == 3, market
    assert {p.parent.name for p in system.parquet_days("signals")} == market
    # The heatmaps also cover the day the live orders land in, which in the first bar of a UTC
    # day is the day after the newest closed bar's.
    today = f"date={datetime.now(UTC).date().isoformat()}"
    for asset in ("liquidation_heatmap", "composite_heatmap"):
        days = {p.parent.name for p in system.parquet_days(asset)}
        assert market <= days, asset
        assert days - market <= {today}, asset


def test_the_digest_follows_the_market_refresh_without_a_clock(system: System):
    def first_digest() -> dict | None:
        digests = [
            m
            for m in system.messages()
            if "not financial advice" in m["plain"] and not m["reply_to"] and " bar " in m["plain"]
        ]
        return digests[0] if digests else None

    digest = wait_for(first_digest, 600, "the first digest")
    received = digest["received_at"]
    # The refresh it follows: the last one (the demo's, or the hourly schedule's if its tick
    # came in between) that ended before the digest arrived.
    refreshes = [
        r
        for r in system.all_runs()
        if r["jobName"] == "market_job"
        and "dagster/backfill" not in r["tags"]
        and r["status"] == "SUCCESS"
        and r["endTime"] <= received
    ]
    assert refreshes, f"no market refresh ended before the digest: {digest['plain']}"
    refresh = max(refreshes, key=lambda r: r["endTime"])
    day = refresh["tags"]["dagster/partition"]
    assert f"bar {day} " in digest["plain"], digest["plain"]
    delay = received - refresh["endTime"]
    assert delay < DIGEST_DEADLINE_S, f"the digest came {delay:.0f} s after the refresh"

    def launched_in_between(asset: str) -> dict | None:
        """The last finished run of `asset` launched between the refresh and the digest (the
        snapshot's can start before the refresh run ends: its inputs land one by one)."""
        runs = [
            r
            for r in system.all_runs()
            if asset in r["assets"] and refresh["creationTime"] <= r["creationTime"] <= received
        ]
        return runs[-1] if runs and runs[-1]["status"] in {"SUCCESS", "FAILURE"} else None

    for asset in ("market_snapshot", "signals", "telegram_alerts"):
        run = wait_for(lambda a=asset: launched_in_between(a), 60, f"the run of {asset}")
        assert run["status"] == "SUCCESS", run
        assert run["tags"].get("dagster/sensor_name") == AUTOMATION, run["tags"]
        assert run["tags"].get("dagster/from_automation_condition") == "true", run["tags"]
        if asset != "telegram_alerts":
            assert run_partitions(run["tags"]) == (day, day), run["tags"]


def run_partitions(tags: dict[str, str]) -> tuple[str, str] | None:
    """The first and last partition a run covers: one tag for a single-partition run; a range
    when automation requested several assets' partitions in one tick (Dagster then launches
    them as a backfill, one range per run)."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"], tags["dagster/partition"]
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    return (first, last) if first and last else None


def test_the_ui_shows_the_intended_lineage(system: System):
    nodes = wait_for(lambda: system.graphql(GRAPH)["assetNodes"], 60, "the asset graph")
    graph = {
        "/".join(n["assetKey"]["path"]): (
            n["groupName"],
            {"/".join(d["path"]) for d in n["dependencyKeys"]},
        )
        for n in nodes
    }
    assert graph == {name: (node.group, set(node.deps)) for name, node in LINEAGE.items()}


def test_the_lake_and_the_duckdb_views_hold_the_rows(system: System):
    wait_for(lambda: system.parquet_days("signals"), 480, "signals in the lake")
    catalog = system.data_dir / "warehouse.duckdb"

    def counts() -> dict[str, int] | None:
        # Open, query, close: a session held open would block the runs' catalog updates.
        try:
            con = duckdb.connect(str(catalog), read_only=True)
        except duckdb.Error:
            return None
        try:
            views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
            wanted = {"price_ohlc", "liquidation_orders", "liquidation_heatmap", "signals"}
            if not wanted <= views:
                return None
            return {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchone()[0] for v in wanted}
        finally:
            con.close()

    rows = wait_for(counts, 120, "the catalog's views")
    assert all(n > 0 for n in rows.values()), rows


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: chromium)")
def test_the_asset_graph_renders_in_a_real_browser(system: System, tmp_path: Path):
    wait_for(lambda: system.graphql(GRAPH)["assetNodes"], 60, "the asset graph")
    page = f"{system.ui}/asset-groups"
    headless = [
        str(chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1400,900",
        "--virtual-time-budget=20000",
    ]
    dom = subprocess.run(
        [*headless, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    for group in GROUPS:
        assert f">{group}<" in dom, f"group {group!r} is not rendered"
    shot = Path(os.environ.get("CG_SCREENSHOT_DIR", tmp_path)) / "lineage.png"
    subprocess.run([*headless, f"--screenshot={shot}", page], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_ctrl_c_leaves_nothing_behind(system: System):
    """Runs last in the module: stop the demo now and look for survivors."""
    system.proc.send_signal(signal.SIGINT)
    system.proc.communicate(timeout=90)
    assert system.proc.returncode == 0
    # Every child inherited CG_DATA_DIR, whatever its command line says (test_processes.py).
    assert processes_with_env("CG_DATA_DIR", str(system.data_dir)) == []
    listening = {name: port for name, port in system.ports.items() if accepts(port)}
    assert listening == {}
