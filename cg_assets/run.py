"""`make run`: the sidecar and `dagster dev` against the real CoinGlass and Telegram.

The production-shaped local run. It reads `.env`, refuses to start without `CG_API_KEY` (the
simulator is `make demo`'s job), validates the settings the code location will load, and
warns about what the configured plan cannot do instead of letting runs fail later.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from cg_assets.coinglass.plans import Plan
from cg_assets.launcher import Launcher, free_port, prepare_dagster_home
from cg_assets.settings import Settings, SettingsError


def preflight(env: Mapping[str, str]) -> tuple[Settings, list[str]]:
    """The settings to run with and warnings to print; SystemExit with the reason if the
    configuration cannot work at all."""
    if not env.get("CG_API_KEY", "").strip():
        raise SystemExit(
            "CG_API_KEY is not set: put CG_API_KEY=<your key> in .env (CoinGlass: Account ->"
            " API) or run `make demo` to try everything against the simulator"
        )
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    warnings = []
    if not settings.plan.has_websocket:
        warnings.append(
            f"CG_PLAN={settings.plan.value}: the liquidation WebSocket and the order history need"
            " Standard or higher; the sidecar is not started and liquidation_orders stays empty"
        )
    if settings.plan.rank < Plan.PROFESSIONAL.rank:
        warnings.append(
            f"CG_PLAN={settings.plan.value}: CoinGlass's model heatmap needs Professional;"
            " coinglass_liquidation_heatmap will be skipped"
        )
    if not env.get("TELEGRAM_BOT_TOKEN") or not env.get("TELEGRAM_CHAT_ID"):
        warnings.append(
            "TELEGRAM_BOT_TOKEN or TELEGRAM_CHAT_ID is not set: alerts are recorded in the"
            " ledger but not sent"
        )
    return settings, warnings


def child_env(
    env: Mapping[str, str], settings: Settings, health_port: int, dagster_home: Path
) -> dict[str, str]:
    """The environment of the sidecar and `dagster dev`. `CG_SIDECAR` tells the code location
    whether a sidecar was started, so it watches the sidecar's health only then."""
    return {
        **env,
        "CG_DATA_DIR": str(settings.data_dir.resolve()),
        "SIDECAR_HEALTH_PORT": str(health_port),
        "DAGSTER_HOME": str(dagster_home),
        "CG_SIDECAR": "on" if settings.sidecar_expected else "off",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--sidecar-port", type=int, default=8790)
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)

    from_file = {k: v for k, v in dotenv_values(args.env_file).items() if v is not None}
    env = {**from_file, **os.environ}  # the shell overrides the file, as dagster dev does
    settings, warnings = preflight(env)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    data_dir = settings.data_dir.resolve()
    health_port = free_port(args.sidecar_port)
    env = child_env(env, settings, health_port, prepare_dagster_home(data_dir))
    with Launcher(env, data_dir) as launcher:
        if settings.sidecar_expected:
            health = f"http://127.0.0.1:{health_port}"
            sidecar = launcher.spawn("sidecar", [sys.executable, "-m", "ws_sidecar"])
            launcher.wait_http(f"{health}/health/live", sidecar, 30)
            print(f"ws_sidecar     {health}/health/ready  {health}/metrics")
        ui = launcher.start_dagster(free_port(args.ui_port))
        launcher.start_schedules()
        print(f"\nDagster UI     {ui}/asset-groups  (schedules and sensors running)")
        print(f"data dir       {data_dir}")
        print(f"logs           {data_dir}/{{sidecar,dagster}}.log")
        print("\nCtrl-C stops everything.")
        launcher.wait()


if __name__ == "__main__":
    main()
