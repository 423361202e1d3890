"""Offline CoinGlass V4: a deterministic synthetic market behind local REST and WebSocket
servers.

Tests and the demo run the whole pipeline against it without a network or an API key;
production code never imports it and only ever knows a base URL, so pointing
`CG_API_BASE_URL` at `cg-sim` is the only difference between a demo and the real service.
"""

from cg_assets.sim.liquidations import EventBatch, LiquidationEvent, LiquidationFeed
from cg_assets.sim.market import SyntheticMarket
from cg_assets.sim.rest import Faults, SimulatorServer
from cg_assets.sim.ws import WsFaults, WsSimulator, WsStats

__all__ = [
    "EventBatch",
    "Faults",
    "LiquidationEvent",
    "LiquidationFeed",
    "SimulatorServer",
    "SyntheticMarket",
    "WsFaults",
    "WsSimulator",
    "WsStats",
]
