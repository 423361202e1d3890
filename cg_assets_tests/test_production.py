"""The production topology as real processes on loopback, configured by deploy/'s files.

Dagster's storage is a real PostgreSQL through the production dagster.yaml (only its run
launcher swapped for the DefaultRunLauncher: no Docker daemon here); the code location runs as
its own `dagster api grpc` code server, and `dagster-webserver` and `dagster-daemon run` load it
through a gRPC workspace derived from deploy/workspace.yaml. Beside them: the sidecar, the
CoinGlass simulator (REST and WebSocket) and the Telegram stand-in. The test backfills three
days of market data, refreshes the newest day as the hourly schedule would, follows a live
liquidation burst to its heads-up and the signals to their digest on Telegram, and checks that
the lake, the alert ledger and Dagster's storage tell the same story.

All shared state is where a deployment keeps it: the lake and the spool in an S3-compatible
store (a moto server; `lake_url`), the rate schedule, the alert ledger and the lake's locks in
PostgreSQL (`state_dsn`), Dagster's runs and events in PostgreSQL too.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
import yaml

from cg_assets import demo
from cg_assets.launcher import BIN, Launcher, graphql
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.resources import build_telegram_resource
from cg_assets.settings import Settings
from cg_assets.state_location import STATE_DSN_SETTING
from cg_assets.storage.event_log import BatchingPostgresEventLogStorage
from cg_assets.storage.lake import Lake
from cg_assets.telegram.ledger import AlertLedger
from cg_assets_tests.deploy_files import load, local_instance_yaml, postgres_env
from cg_assets_tests.s3_harness import MotoServer
from cg_assets_tests.test_e2e import free_port, get_json, wait_for

# Start-up, a backfill and the alerts take about 3.5 minutes on an idle 2-core box; the waits
# below allow for a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1500)]

BACKFILL_DAYS = 3
MARKET = [a.name for a in MARKET_ASSETS]


def create_database(server_dsn: str) -> str:
    """A fresh database on the session's server; its DSN."""
    import psycopg2

    name = f"prod_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return server_dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def lake_url(s3_server: MotoServer) -> str:
    """Where the lake and the spool live (CG_LAKE_URL): a bucket of the S3-compatible server."""
    bucket = f"cg-prod-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    return f"s3://{bucket}/cg"


@pytest.fixture(scope="module")
def state_dsn(postgres_server: str) -> str:
    """CG_STATE_DSN: the shared state's PostgreSQL database."""
    return create_database(postgres_server)


def grpc_workspace(port: int) -> str:
    """deploy/workspace.yaml pointed at the code server on this machine."""
    workspace = load("workspace.yaml")
    [entry] = workspace["load_from"]
    entry["grpc_server"].update(host="127.0.0.1", port=port)
    return yaml.safe_dump(workspace)


@dataclass
class Topology:
    env: dict[str, str]
    settings: Settings
    ui: str
    health: str
    standin: str
    dagster_home: Path

    def messages(self) -> list[dict]:
        return get_json(f"{self.standin}/_sim/messages")

    def instance(self) -> dg.DagsterInstance:
        """Dagster's instance as the deployment's processes load it (from this environment)."""
        with mock.patch.dict(os.environ, self.env):
            return dg.DagsterInstance.from_config(str(self.dagster_home))

    def story(self) -> str:
        """What happened so far, for a failure message: the runs and the messages received."""
        with self.instance() as instance:
            runs = [
                f"{r.job_name} {r.status.value} {sorted(r.asset_selection or [])}"
                for r in reversed(instance.get_runs())
            ]
        messages = [m["plain"].splitlines()[0] for m in self.messages()]
        return "runs:\n  " + "\n  ".join(runs) + "\nmessages:\n  " + "\n  ".join(messages)

    def lake(self) -> Lake:
        """The lake as the deployment's processes open it (CG_LAKE_URL, its S3 settings)."""
        with mock.patch.dict(os.environ, self.env):
            return Lake.for_settings(self.settings, self.env)

    def ledger(self) -> AlertLedger:
        """The deployment's ledger, in the state database."""
        policy = build_telegram_resource(self.settings, self.env).policy()
        return AlertLedger(self.env[STATE_DSN_SETTING], policy)


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: str,
    s3_server: MotoServer,
    lake_url: str,
    state_dsn: str,
) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("production")
    data_dir = root / "data"
    data_dir.mkdir()
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_yaml())
    ports = {name: free_port() for name in ("ui", "sim", "ws", "telegram", "sidecar", "grpc")}
    (home / "workspace.yaml").write_text(grpc_workspace(ports["grpc"]))
    sim, standin = f"http://127.0.0.1:{ports['sim']}", f"http://127.0.0.1:{ports['telegram']}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CG_", "TELEGRAM_"))}
    with mock.patch.dict(os.environ, base, clear=True):
        system_ports = demo.Ports(
            sim=ports["sim"], ws=ports["ws"], telegram=ports["telegram"], sidecar=ports["sidecar"]
        )
        env = demo.simulator_env(data_dir, system_ports)
    env.update(postgres_env(create_database(postgres_server)))
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_COMPUTE_LOGS_DIR=str(data_dir / "compute_logs"),
        CG_STATE_DSN=state_dsn,
    )
    env.update(s3_server.env, CG_LAKE_URL=lake_url)
    workspace = str(home / "workspace.yaml")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    launcher = Launcher(env, root)
    try:
        simulator = launcher.spawn(
            "simulator",
            [
                str(BIN / "cg-sim"),
                *("--port", str(ports["sim"]), "--ws-port", str(ports["ws"])),
                *("--telegram-port", str(ports["telegram"]), "--scenario", "cascade"),
                *("--episode-every-min", "1", "--no-require-key"),
            ],
        )
        launcher.wait_http(f"{sim}/api/futures/supported-coins", simulator, 60)
        health = f"http://127.0.0.1:{ports['sidecar']}"
        sidecar = launcher.spawn("sidecar", [sys.executable, "-m", "ws_sidecar"])
        launcher.wait_http(f"{health}/health/live", sidecar, 30)
        code = launcher.spawn(
            "code",
            [
                *(str(BIN / "dagster"), "api", "grpc", "-m", "cg_assets.definitions"),
                *("-h", "127.0.0.1", "-p", str(ports["grpc"])),
            ],
        )
        ui = f"http://127.0.0.1:{ports['ui']}"
        webserver = launcher.spawn(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                *("-h", "127.0.0.1", "-p", str(ports["ui"]), "-w", workspace),
            ],
        )
        launcher.spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace])
        launcher.wait_http(f"{ui}/server_info", webserver, 180)
        assert code.poll() is None, (root / "code.log").read_text()[-3000:]
        yield Topology(env, Settings.from_env(env), ui, health, standin, home)
    finally:
        launcher.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def launch_market_backfill(ui: str, first: date, last: date) -> str:
    params = {
        "partitionsByAssets": [
            {
                "assetKey": {"path": [name]},
                "partitions": {"range": {"start": first.isoformat(), "end": last.isoformat()}},
            }
            for name in MARKET
        ],
        "fromFailure": False,
        "title": "production e2e",
    }
    result = graphql(ui, demo.LAUNCH_BACKFILL, {"params": params})["data"]
    launched = result["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def loaded_location(ui: str) -> bool:
    nodes = graphql(ui, demo.REPOSITORY)["data"]["repositoriesOrError"]["nodes"]
    return bool(nodes) and nodes[0]["location"]["name"] == "cg_assets"


def test_backfill_live_alerts_and_the_stores_agree(topology: Topology, lake_url: str):
    ui = topology.ui
    # The webserver reads the code location from the separate code server.
    wait_for(lambda: loaded_location(ui), 120, "the gRPC code location in the webserver")
    newest = demo.newest_day(datetime.now(UTC), topology.settings.interval_ms)
    first = newest - timedelta(days=BACKFILL_DAYS)
    backfill_id = launch_market_backfill(ui, first, newest - timedelta(days=1))
    # The daemon runs the backfill off the queue, through the code server.
    state = wait_for(lambda: demo.backfill_finished(ui, backfill_id), 480, "the market backfill")
    assert state == "COMPLETED_SUCCESS", state
    # The newest day as the hourly schedule refreshes it; automation takes it to the digest.
    demo.launch_refresh(ui, newest)

    def telegram() -> dict[str, dict] | None:
        messages = topology.messages()
        headsups = [m for m in messages if "liquidation burst" in m["plain"]]
        digests = [m for m in messages if f"bar {newest} " in m["plain"] and not m["reply_to"]]
        return {"headsup": headsups[0], "digest": digests[0]} if headsups and digests else None

    try:
        seen = wait_for(telegram, 900, "a heads-up and the newest bar's digest on Telegram")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{topology.story()}") from None
    assert get_json(f"{topology.health}/health/ready")["ready"]

    # Dagster's storage (PostgreSQL) and the lake agree on every market asset's days.
    days = {(first + timedelta(days=i)).isoformat() for i in range(BACKFILL_DAYS + 1)}
    lake = topology.lake()
    with topology.instance() as instance:
        assert isinstance(instance.event_log_storage, BatchingPostgresEventLogStorage)
        for name in MARKET:
            stored = instance.get_materialized_partitions(dg.AssetKey(name))
            in_lake = {d.isoformat() for d in lake.days(name)}
            assert stored == in_lake == days, name
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    # The lake is the store's, not this node's disk.
    assert lake.url("price_ohlc").startswith(lake_url), lake.url("price_ohlc")
    assert not (topology.settings.data_dir / "lake").exists()
    # The run's captured output is where the webserver reads it (compute_logs).
    [run] = runs
    logs = Path(topology.env["DAGSTER_COMPUTE_LOGS_DIR"]) / run.run_id / "compute_logs"
    assert any(f.stat().st_size for f in logs.glob("*.err")), logs

    # The ledger's sent alerts are the messages Telegram received, and the other way round
    # for the alerts (ops messages are not alerts).
    ledger = topology.ledger()
    assert ledger.ident.startswith("postgresql:"), ledger.ident
    sent = {r.message_id: r for r in ledger.records(status="sent")}
    received = {m["message_id"]: m for m in topology.messages()}
    assert set(sent) <= set(received)
    for message_id, record in sent.items():
        assert received[message_id]["text"] in record.text, record.key
    assert seen["headsup"]["message_id"] in sent
    assert seen["digest"]["message_id"] in sent
