"""`cg-sim`: the CoinGlass simulator as a standalone process, for the demo and benchmarks.

It serves REST and the WebSocket from one liquidation feed (REST's `/_sim/ws/*` routes control
the WebSocket's faults from other processes), prints the REST base URL on the
first line of stdout and the WebSocket URL on the second once both accept connections
(callers wait for those lines), then serves until SIGINT or SIGTERM and exits 0. With
`--telegram-port` it also runs the Telegram Bot API stand-in, prints its base URL (the value for
TELEGRAM_API_BASE_URL) on the third line, and then every message it receives, as a user would
read it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from types import FrameType

from cg_assets.coinglass.plans import Plan
from cg_assets.sim.liquidations import LiquidationFeed
from cg_assets.sim.market import SyntheticMarket
from cg_assets.sim.rest import SimulatorServer
from cg_assets.sim.scenarios import DEFAULT_COINS, SCENARIOS, scenario_for
from cg_assets.sim.telegram import DEFAULT_CHAT_ID, DEFAULT_TOKEN, ReceivedMessage, TelegramServer
from cg_assets.sim.ws import WsSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cg-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--ws-port", type=int, default=8766, help="0 picks a free port")
    parser.add_argument("--liq-rate", type=float, default=5.0, help="liquidation events per second")
    parser.add_argument("--seed", type=int, default=7, help="same seed, same market")
    parser.add_argument(
        "--scenario",
        default="calm",
        choices=SCENARIOS,
        help="the market's story: cascade and squeeze put one episode in the last closed hour"
        " and start a new one every 8 minutes",
    )
    parser.add_argument(
        "--episode-every-min",
        type=int,
        default=8,
        help="minutes between live episodes of --scenario (the first comes this long after start)",
    )
    parser.add_argument(
        "--scenario-coins",
        default=",".join(DEFAULT_COINS),
        help="coins the episodes take turns on",
    )
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
    parser.add_argument(
        "--telegram-port",
        type=int,
        default=None,
        help="also serve the Telegram stand-in on this port (0 picks a free port)",
    )
    parser.add_argument(
        "--telegram-token", default=DEFAULT_TOKEN, help="the bot token the stand-in accepts"
    )
    parser.add_argument(
        "--telegram-chat-id",
        action="append",
        default=None,
        help=f"a chat the bot may post to (repeatable; default {DEFAULT_CHAT_ID})",
    )
    return parser


def _print_message(message: ReceivedMessage) -> None:
    print(message.render(), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    anchor_ms = time.time_ns() // 1_000_000
    scenario = scenario_for(
        args.scenario,
        anchor_ms,
        args.scenario_coins.split(","),
        every_ms=args.episode_every_min * 60_000,
    )
    market = SyntheticMarket(seed=args.seed, scenario=scenario)
    feed = LiquidationFeed(market, seed=args.seed, rate_per_s=args.liq_rate)
    ws = WsSimulator(feed, args.host, args.ws_port, plan=args.plan, require_key=args.require_key)
    server = SimulatorServer(
        market,
        plan=args.plan,
        require_key=args.require_key,
        host=args.host,
        port=args.port,
        rate_limit_per_min=args.rate_limit_per_min,
        feed=feed,
        ws=ws,
    )
    telegram = (
        None
        if args.telegram_port is None
        else TelegramServer(
            tokens=[args.telegram_token],
            chats=args.telegram_chat_id or [DEFAULT_CHAT_ID],
            host=args.host,
            port=args.telegram_port,
            on_message=_print_message,
        )
    )
    with contextlib.ExitStack() as running:
        urls = [running.enter_context(server).base_url, running.enter_context(ws).url]
        if telegram is not None:
            urls.append(running.enter_context(telegram).base_url)
        for url in urls:
            print(url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
