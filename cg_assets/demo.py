"""`make demo`: the whole product against the simulator, in one go.

It starts the CoinGlass simulator (REST, WebSocket and the Telegram stand-in) with a market
story (`--scenario`), the liquidation sidecar, and `dagster dev` with every schedule and sensor
running; backfills the last days of the market, the liquidations, the heatmaps and the signals
so every asset has data at once; and prints each Telegram message the stand-in receives.

Everything lives under the data dir (lake, catalog, spool, alert ledger, DAGSTER_HOME), so a
second `make demo` finds the data and run history of the first. Ctrl-C stops every process
started here (see `cg_assets.launcher`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cg_assets.heatmaps.composite import ASSET as COMPOSITE_HEATMAP
from cg_assets.heatmaps.liquidation import ASSET as LIQUIDATION_HEATMAP
from cg_assets.heatmaps.model import ASSET as MODEL_HEATMAP
from cg_assets.launcher import BIN, Launcher, free_port, graphql, prepare_dagster_home
from cg_assets.liquidations.assets import ASSET as LIQUIDATION_ORDERS
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.signals.engine import ASSET as SIGNALS
from cg_assets.signals.snapshot import ASSET as SNAPSHOT
from cg_assets.sim.scenarios import SCENARIOS
from cg_assets.sim.telegram import DEFAULT_CHAT_ID, DEFAULT_TOKEN, ReceivedMessage

# Everything a backfill can fill, in lineage order (Dagster orders the runs by dependency).
BACKFILL_ASSETS = (
    *(a.name for a in MARKET_ASSETS),
    LIQUIDATION_ORDERS,
    LIQUIDATION_HEATMAP,
    COMPOSITE_HEATMAP,
    SNAPSHOT,
    SIGNALS,
    MODEL_HEATMAP,
)

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def launch_backfill(ui: str, days: int) -> str:
    today = datetime.now(UTC).date()
    partitions = [(today - timedelta(days=i)).isoformat() for i in range(days, -1, -1)]
    params = {
        "assetSelection": [{"path": [name]} for name in BACKFILL_ASSETS],
        "partitionNames": partitions,
        "fromFailure": False,
        "title": f"demo: last {days} days",
    }
    result = graphql(ui, LAUNCH_BACKFILL, {"params": params})["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"backfill was not launched: {result}")
    return f"{result['backfillId']} ({partitions[0]}..{partitions[-1]})"


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


def simulator_env(
    data_dir: Path, sim_url: str, ws_port: int, health_port: int, standin: str
) -> dict[str, str]:
    """This process's environment pointed at a local simulator, stand-in and sidecar port."""
    env = {
        **os.environ,
        "CG_API_BASE_URL": sim_url,
        "CG_PLAN": "professional",
        "CG_DATA_DIR": str(data_dir),
        "CG_WS_URL": f"ws://127.0.0.1:{ws_port}/ws-api",
        "SIDECAR_HEALTH_PORT": str(health_port),
        "TELEGRAM_API_BASE_URL": standin,
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_CHAT_ID": str(DEFAULT_CHAT_ID),
        "DAGSTER_HOME": str(prepare_dagster_home(data_dir)),
    }
    env.pop("CG_API_KEY", None)
    return env


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
    sim_port, ui_port = free_port(args.sim_port), free_port(args.ui_port)
    ws_port, health_port = free_port(args.ws_port), free_port(args.sidecar_port)
    telegram_port = free_port(args.telegram_port)
    sim_url, health = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{health_port}"
    standin = f"http://127.0.0.1:{telegram_port}"
    env = simulator_env(data_dir, sim_url, ws_port, health_port, standin)
    with Launcher(env, data_dir) as launcher:
        sim = launcher.spawn(
            "simulator",
            [
                str(BIN / "cg-sim"),
                *("--port", str(sim_port), "--ws-port", str(ws_port)),
                *("--telegram-port", str(telegram_port)),
                *("--scenario", args.scenario, "--episode-every-min", str(args.episode_every_min)),
                "--no-require-key",
            ],
        )
        launcher.wait_http(f"{sim_url}/api/futures/supported-coins", sim, 60)
        print(f"simulator      {sim_url}  scenario {args.scenario}  (log: simulator.log)")
        print(f"telegram       {standin}  (stand-in; messages appear below)")
        sidecar = launcher.spawn("sidecar", [sys.executable, "-m", "ws_sidecar"])
        launcher.wait_http(f"{health}/health/live", sidecar, 30)
        print(f"ws_sidecar     {health}/health/ready  {health}/metrics")
        ui = launcher.start_dagster(ui_port)
        print(f"backfill       {launch_backfill(ui, args.backfill_days)}")
        launcher.start_schedules()
        print("schedules      all running; sensors: spool, heads-up, alerts, ops")
        print(f"\nDagster UI     {ui}/asset-groups")
        print(f"data dir       {data_dir}  (lake, warehouse.duckdb, spool, alerts, dagster_home)")
        print(f"query          duckdb {data_dir / 'warehouse.duckdb'}")
        print(f"logs           {data_dir}/{{simulator,sidecar,dagster}}.log")
        print("\nCtrl-C stops everything.\n", flush=True)
        launcher.wait(on_tick=message_printer(standin))


if __name__ == "__main__":
    main()
