"""`make demo`: the whole product against the simulator, in one go.

It starts the CoinGlass simulator (REST, WebSocket and the Telegram stand-in) with a market
story (`--scenario`), the liquidation sidecar, and `dagster dev` with every sensor running;
backfills the days before the newest bar's day (and that day's liquidations and heatmaps), so
every asset has history at once; then, as the hourly schedule would, refreshes the newest
day's market data, and its snapshot, signals and Telegram digest follow by declarative
automation. The schedules start after that refresh and take over. It prints each Telegram
message the stand-in receives.

Everything lives under the data dir (lake, catalog, spool, alert ledger, DAGSTER_HOME), so a
second `make demo` finds the data and run history of the first. Ctrl-C stops every process
started here (see `cg_assets.launcher`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cg_assets.heatmaps.composite import ASSET as COMPOSITE_HEATMAP
from cg_assets.heatmaps.liquidation import ASSET as LIQUIDATION_HEATMAP
from cg_assets.heatmaps.model import ASSET as MODEL_HEATMAP
from cg_assets.launcher import BIN, Launcher, free_port, graphql, prepare_dagster_home
from cg_assets.liquidations.assets import ASSET as LIQUIDATION_ORDERS
from cg_assets.market.schedules import JOB_NAME as MARKET_JOB
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.partitions import to_ms
from cg_assets.settings import Settings
from cg_assets.signals.engine import ASSET as SIGNALS
from cg_assets.signals.outcomes import ASSET as SIGNAL_OUTCOMES
from cg_assets.signals.scorecard import ASSET as SIGNAL_SCORECARD
from cg_assets.signals.snapshot import ASSET as SNAPSHOT
from cg_assets.sim.scenarios import SCENARIOS
from cg_assets.sim.telegram import DEFAULT_CHAT_ID, DEFAULT_TOKEN, ReceivedMessage

# Everything a backfill can fill, in lineage order (Dagster orders the runs by dependency).
# The newest day's market data, snapshot and signals are left to the refresh that follows.
BACKFILL_ASSETS = (
    *(a.name for a in MARKET_ASSETS),
    LIQUIDATION_ORDERS,
    LIQUIDATION_HEATMAP,
    COMPOSITE_HEATMAP,
    SNAPSHOT,
    SIGNALS,
    SIGNAL_OUTCOMES,
    SIGNAL_SCORECARD,
    MODEL_HEATMAP,
)
REFRESHED = {*(a.name for a in MARKET_ASSETS), SNAPSHOT, SIGNALS, SIGNAL_OUTCOMES}
UNPARTITIONED = {MODEL_HEATMAP, SIGNAL_SCORECARD}
# Backfill states after which no run of it starts any more.
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
REPOSITORY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}"""


def newest_day(now: datetime, interval_ms: int) -> date:
    """The UTC day of the newest closed bar: the day the hourly refresh brings up to date."""
    ms = to_ms(now)
    return datetime.fromtimestamp((ms - ms % interval_ms - interval_ms) / 1000, UTC).date()


def launch_backfill(ui: str, days: int, newest: date, today: date | None = None) -> str:
    """Backfill `days` days before `newest`; the refresh brings `newest` of the market chain.

    The liquidation-fed assets run through `today` (default `newest`), the UTC day the live
    feed lands in: in the first bar of a UTC day the newest closed bar is yesterday's, and
    stopping there would leave the day that holds every live order without a heatmap.
    """
    first = (newest - timedelta(days=days)).isoformat()
    live = max(newest, today or newest)

    def selector(asset: str) -> dict:
        last = newest - timedelta(days=1) if asset in REFRESHED else live
        partitions = {"range": {"start": first, "end": last.isoformat()}}
        return {
            "assetKey": {"path": [asset]},
            "partitions": None if asset in UNPARTITIONED else partitions,
        }

    params = {
        "partitionsByAssets": [
            selector(name) for name in BACKFILL_ASSETS if days or name not in REFRESHED
        ],
        "fromFailure": False,
        "title": f"demo: {days} days before {newest}",
    }
    result = graphql(ui, LAUNCH_BACKFILL, {"params": params})["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"backfill was not launched: {result}")
    return result["backfillId"]


def backfill_finished(ui: str, backfill_id: str) -> str | None:
    """The backfill's final state once no run of it starts any more, else None."""
    backfill = graphql(ui, BACKFILL_STATUS, {"id": backfill_id})["data"]
    state = backfill["partitionBackfillOrError"].get("status")
    return state if state in BACKFILL_DONE else None


def launch_refresh(ui: str, day: date) -> str:
    """A run of the market job for `day`, as the hourly refresh launches it; its run id."""
    [repository] = graphql(ui, REPOSITORY)["data"]["repositoriesOrError"]["nodes"]
    params = {
        "selector": {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "jobName": MARKET_JOB,
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day.isoformat()}]},
    }
    result = graphql(ui, LAUNCH_RUN, {"params": params})["data"]["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise SystemExit(f"the refresh of {day} was not launched: {result}")
    return result["run"]["runId"]


@dataclass
class Handover:
    """Once the backfill is done, refresh the newest day and start the schedules: the refresh
    comes after the history it reads, and the hourly schedule takes over from it."""

    ui: str
    backfill_id: str
    newest: date
    start_schedules: Callable[[], None]
    done: bool = False

    def __call__(self) -> None:
        if self.done:
            return
        try:
            state = backfill_finished(self.ui, self.backfill_id)
        except (urllib.error.URLError, OSError, ValueError):
            return
        if state is None:
            return
        self.done = True
        run_id = launch_refresh(self.ui, self.newest)
        print(
            f"backfill       {state.lower()}; refresh of {self.newest} launched (run {run_id}):"
            " snapshot, signals and the digest follow it by automation",
            flush=True,
        )
        self.start_schedules()
        print("schedules      all running: the hourly refresh takes over", flush=True)


def message_printer(standin: str) -> Callable[[], None]:
    """A function that prints the stand-in's messages it has not printed yet."""
    seen = 0

    def show_new() -> None:
        nonlocal seen
        try:
            with urllib.request.urlopen(f"{standin}/_sim/messages", timeout=2) as response:
                messages = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return
        for message in messages[seen:]:
            print(ReceivedMessage(**message).render(), flush=True)
        seen = len(messages)

    return show_new


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one simulated system: the simulator's REST and WebSocket sides,
    the Telegram stand-in, the sidecar's health server and Dagster's UI."""

    sim: int = 0
    ws: int = 0
    telegram: int = 0
    sidecar: int = 0
    ui: int = 0

    def resolved(self) -> Ports:
        """Each preferred port if free, else (or for 0) any free one."""
        return Ports(*(free_port(getattr(self, f.name)) for f in fields(self)))

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim}"

    @property
    def standin(self) -> str:
        return f"http://127.0.0.1:{self.telegram}"

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.sidecar}"


def simulator_env(data_dir: Path, ports: Ports) -> dict[str, str]:
    """This process's environment pointed at a local simulator, stand-in and sidecar port."""
    env = {
        **os.environ,
        "CG_API_BASE_URL": ports.sim_url,
        "CG_PLAN": "professional",
        "CG_DATA_DIR": str(data_dir),
        "CG_WS_URL": f"ws://127.0.0.1:{ports.ws}/ws-api",
        "SIDECAR_HEALTH_PORT": str(ports.sidecar),
        "CG_SIDECAR": "on",
        "TELEGRAM_API_BASE_URL": ports.standin,
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_CHAT_ID": str(DEFAULT_CHAT_ID),
        "DAGSTER_HOME": str(prepare_dagster_home(data_dir)),
    }
    env.pop("CG_API_KEY", None)
    return env


def start_sidecar(launcher: Launcher, ports: Ports) -> subprocess.Popen:
    """The sidecar, once its health server answers (its log: sidecar.log)."""
    sidecar = launcher.spawn("sidecar", [sys.executable, "-m", "ws_sidecar"])
    launcher.wait_http(f"{ports.health}/health/live", sidecar, 30)
    return sidecar


def start_system(launcher: Launcher, ports: Ports, sim_args: Sequence[str] = ()) -> str:
    """The whole product against the simulator, as `make demo` runs it: `cg-sim` (REST,
    WebSocket, Telegram stand-in; `sim_args` are its story and rate), the sidecar and
    `dagster dev` with its daemon and every sensor. The launcher's environment must be
    `simulator_env(..., ports)`. Returns Dagster's UI URL once it answers."""
    sim = launcher.spawn(
        "simulator",
        [
            str(BIN / "cg-sim"),
            *("--port", str(ports.sim), "--ws-port", str(ports.ws)),
            *("--telegram-port", str(ports.telegram), "--no-require-key"),
            *sim_args,
        ],
    )
    launcher.wait_http(f"{ports.sim_url}/api/futures/supported-coins", sim, 60)
    start_sidecar(launcher, ports)
    return launcher.start_dagster(ports.ui)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--sim-port", type=int, default=8765)
    parser.add_argument("--ws-port", type=int, default=8766)
    parser.add_argument("--telegram-port", type=int, default=8767)
    parser.add_argument("--sidecar-port", type=int, default=8790)
    parser.add_argument("--backfill-days", type=int, default=7)
    parser.add_argument("--scenario", default="cascade", choices=SCENARIOS)
    parser.add_argument("--episode-every-min", type=int, default=8)
    args = parser.parse_args(argv)

    data_dir = Path(os.environ.get("CG_DATA_DIR", "data")).resolve()
    ports = Ports(
        args.sim_port, args.ws_port, args.telegram_port, args.sidecar_port, args.ui_port
    ).resolved()
    env = simulator_env(data_dir, ports)
    with Launcher(env, data_dir) as launcher:
        story = ("--scenario", args.scenario, "--episode-every-min", str(args.episode_every_min))
        ui = start_system(launcher, ports, story)
        print(f"simulator      {ports.sim_url}  scenario {args.scenario}  (log: simulator.log)")
        print(f"telegram       {ports.standin}  (stand-in; messages appear below)")
        print(f"ws_sidecar     {ports.health}/health/ready  {ports.health}/metrics")
        now = datetime.now(UTC)
        newest = newest_day(now, Settings.from_env(env).interval_ms)
        backfill_id = launch_backfill(ui, args.backfill_days, newest, now.date())
        print(f"backfill       {backfill_id}: {args.backfill_days} days before {newest}")
        print("sensors        running: automation, spool, heads-up, health, ops")
        print(f"schedules      start once {newest} is refreshed, after the backfill")
        print(f"\nDagster UI     {ui}/asset-groups")
        print(f"data dir       {data_dir}  (lake, warehouse.duckdb, spool, alerts, dagster_home)")
        print(f"query          duckdb {data_dir / 'warehouse.duckdb'}")
        print(f"logs           {data_dir}/{{simulator,sidecar,dagster}}.log")
        print("\nCtrl-C stops everything.\n", flush=True)
        handover = Handover(ui, backfill_id, newest, launcher.start_schedules)
        show_new = message_printer(ports.standin)

        def on_tick() -> None:
            handover()
            show_new()

        launcher.wait(on_tick=on_tick)


if __name__ == "__main__":
    main()
