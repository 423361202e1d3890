"""`make demo`: the simulator, the sidecar, `dagster dev`, a 7-day backfill and running
schedules, in one go.

Everything lives under the data dir (lake, catalog, spool, DAGSTER_HOME), so a second
`make demo` finds the data and run history of the first. Ctrl-C stops every process started
here (see `cg_assets.launcher`).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cg_assets.launcher import BIN, Launcher, free_port, graphql, prepare_dagster_home
from cg_assets.market.series import MARKET_ASSETS

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
        "assetSelection": [{"path": [a.name]} for a in MARKET_ASSETS],
        "partitionNames": partitions,
        "fromFailure": False,
        "title": f"demo: last {days} days",
    }
    result = graphql(ui, LAUNCH_BACKFILL, {"params": params})["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"backfill was not launched: {result}")
    return f"{result['backfillId']} ({partitions[0]}..{partitions[-1]})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--sim-port", type=int, default=8765)
    parser.add_argument("--ws-port", type=int, default=8766)
    parser.add_argument("--sidecar-port", type=int, default=8790)
    parser.add_argument("--backfill-days", type=int, default=7)
    args = parser.parse_args(argv)

    data_dir = Path(os.environ.get("CG_DATA_DIR", "data")).resolve()
    home = prepare_dagster_home(data_dir)
    sim_port, ui_port = free_port(args.sim_port), free_port(args.ui_port)
    ws_port, health_port = free_port(args.ws_port), free_port(args.sidecar_port)
    sim_url, health = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{health_port}"
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
    with Launcher(env, data_dir) as launcher:
        sim = launcher.spawn(
            "simulator",
            [
                str(BIN / "cg-sim"),
                *("--port", str(sim_port), "--ws-port", str(ws_port)),
                "--no-require-key",
            ],
        )
        launcher.wait_http(f"{sim_url}/api/futures/supported-coins", sim, 30)
        print(f"simulator      {sim_url}  (log: {data_dir / 'simulator.log'})")
        sidecar = launcher.spawn("sidecar", [sys.executable, "-m", "ws_sidecar"])
        launcher.wait_http(f"{health}/health/live", sidecar, 30)
        print(f"ws_sidecar     {health}/health/ready  {health}/metrics")
        ui = launcher.start_dagster(ui_port)
        print(f"backfill       {launch_backfill(ui, args.backfill_days)}")
        launcher.start_schedules()
        print("schedules      market_hourly_refresh, market_daily_finalize: running")
        print(f"\nDagster UI     {ui}/asset-groups")
        print(f"data dir       {data_dir}  (Parquet lake, warehouse.duckdb, dagster_home)")
        print(f"query          duckdb {data_dir / 'warehouse.duckdb'}")
        print(f"logs           {data_dir}/{{simulator,sidecar,dagster}}.log")
        print("\nCtrl-C stops everything.")
        launcher.wait()


if __name__ == "__main__":
    main()
