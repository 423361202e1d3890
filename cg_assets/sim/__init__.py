"""Offline CoinGlass V4: a deterministic synthetic market behind local REST and WebSocket
servers, and a Telegram Bot API stand-in for the alerts.

Tests and the demo run the whole pipeline against it without a network or an API key;
production code never imports it and only ever knows a base URL, so pointing
`CG_API_BASE_URL` at `cg-sim` is the only difference between a demo and the real service.
"""

from cg_assets.sim.heatmap import HEATMAP_RANGES, ModelHeatmap, model_heatmap
from cg_assets.sim.liquidation_events import EventBatch, Injection, LiquidationEvent
from cg_assets.sim.liquidations import LiquidationFeed
from cg_assets.sim.market import SyntheticMarket
from cg_assets.sim.rest import SimulatorServer
from cg_assets.sim.rest_faults import Faults
from cg_assets.sim.scenarios import SCENARIOS, Episode, Scenario, scenario_for
from cg_assets.sim.telegram import ReceivedMessage, TelegramServer
from cg_assets.sim.telegram_faults import TelegramFaults
from cg_assets.sim.ws import WsFaults, WsSimulator
from cg_assets.sim.ws_stats import WsStats

__all__ = [
    "HEATMAP_RANGES",
    "SCENARIOS",
    "Episode",
    "EventBatch",
    "Faults",
    "Injection",
    "LiquidationEvent",
    "LiquidationFeed",
    "ModelHeatmap",
    "ReceivedMessage",
    "Scenario",
    "SimulatorServer",
    "SyntheticMarket",
    "TelegramFaults",
    "TelegramServer",
    "WsFaults",
    "WsSimulator",
    "WsStats",
    "model_heatmap",
    "scenario_for",
]
