"""Dagster resources: the CoinGlass API client, the Parquet lake with its DuckDB catalog, and
Telegram (alert delivery and ops messages)."""

from cg_assets.resources.coinglass import COINGLASS_POOL, CoinGlassResource, MissingApiKeyError
from cg_assets.resources.lake import LakeResource
from cg_assets.resources.telegram import TelegramResource, build_telegram_resource, send_ops

__all__ = [
    "COINGLASS_POOL",
    "CoinGlassResource",
    "LakeResource",
    "MissingApiKeyError",
    "TelegramResource",
    "build_telegram_resource",
    "send_ops",
]
