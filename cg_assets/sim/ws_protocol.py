"""The CoinGlass V4 WebSocket protocol as the simulator speaks it (reference §6): the two
liquidation channels and their payload styles, the subscribe messages clients send, and the
ways a fault breaks a frame, so that the server only moves frames.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from cg_assets.sim.liquidation_events import EventBatch

CAMEL_CHANNEL = "liquidationOrders"
SNAKE_CHANNEL = "liquidation_orders"

Item = dict[str, Any]


def camel_items(batch: EventBatch) -> list[Item]:
    """`liquidationOrders` items, as documented and seen in captured live events."""
    return [
        {
            "baseAsset": coin,
            "exName": exchange,
            "price": price,
            "side": 1 if long_ else 2,
            "symbol": pair,
            "time": t,
            "volUsd": usd,
        }
        for coin, exchange, price, long_, pair, t, usd in _columns(batch)
    ]


def snake_items(batch: EventBatch) -> list[Item]:
    """`liquidation_orders` items, the newer docs' naming of the same event."""
    return [
        {
            "base_asset": coin,
            "exchange": exchange,
            "price": price,
            "side": 1 if long_ else 2,
            "symbol": pair,
            "time": t,
            "volume_usd": usd,
        }
        for coin, exchange, price, long_, pair, t, usd in _columns(batch)
    ]


def _columns(batch: EventBatch) -> zip[tuple[str, str, float, bool, str, int, float]]:
    return zip(
        batch.coins(),
        batch.exchanges(),
        batch.price.tolist(),
        batch.long.tolist(),
        batch.pairs(),
        batch.time.tolist(),
        batch.usd_value.tolist(),
        strict=True,
    )


CHANNELS: dict[str, Callable[[EventBatch], list[Item]]] = {
    CAMEL_CHANNEL: camel_items,
    SNAKE_CHANNEL: snake_items,
}


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def break_frame(kind: str, text: str, channel: str, items: list[Item]) -> str:
    """A frame a careless parser would choke on: cut JSON, `data` not a list, or items
    without their fields."""
    if kind == "truncated":
        return text[: len(text) // 2]
    if kind == "not_array":
        return dumps({"channel": channel, "data": items[0]})
    return dumps({"channel": channel, "data": [{"symbol": i["symbol"]} for i in items]})


MALFORMED_KINDS = ("truncated", "not_array", "missing_fields")


def parse_request(message: str) -> tuple[str, set[str]] | None:
    """(method, known channels) of a subscribe/unsubscribe message; None for anything else."""
    with contextlib.suppress(ValueError):
        request = json.loads(message)
        if isinstance(request, dict) and request.get("method") in ("subscribe", "unsubscribe"):
            channels = request.get("channels")
            if isinstance(channels, list):
                return request["method"], {c for c in channels if c in CHANNELS}
    return None
