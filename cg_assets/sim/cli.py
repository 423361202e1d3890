"""`cg-sim`: the CoinGlass simulator as a standalone process, for the demo and benchmarks.

It serves REST and the WebSocket from one liquidation feed, prints the REST base URL on the
first line of stdout and the WebSocket URL on the second once both accept connections
(callers wait for those lines), then serves until SIGINT or SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from cg_assets.coinglass.plans import Plan
from cg_assets.sim.liquidations import LiquidationFeed
from cg_assets.sim.market import SyntheticMarket
from cg_assets.sim.rest import SimulatorServer
from cg_assets.sim.ws import WsSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cg-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--ws-port", type=int, default=8766, help="0 picks a free port")
    parser.add_argument("--liq-rate", type=float, default=5.0, help="liquidation events per second")
    parser.add_argument("--seed", type=int, default=7, help="same seed, same market")
    parser.add_argument("--plan", default=Plan.PROFESSIONAL.value, choices=[p.value for p in Plan])
    parser.add_argument(
        "--require-key",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer keyless requests with code 401 (--no-require-key serves them at --plan)",
    )
    parser.add_argument(
        "--rate-limit-per-min", type=int, default=None, help="override the plan's limit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    market = SyntheticMarket(seed=args.seed)
    feed = LiquidationFeed(market, seed=args.seed, rate_per_s=args.liq_rate)
    server = SimulatorServer(
        market,
        plan=args.plan,
        require_key=args.require_key,
        host=args.host,
        port=args.port,
        rate_limit_per_min=args.rate_limit_per_min,
        feed=feed,
    )
    ws = WsSimulator(feed, args.host, args.ws_port, plan=args.plan, require_key=args.require_key)
    with server, ws:
        print(server.base_url, flush=True)
        print(ws.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
