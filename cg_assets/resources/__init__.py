"""Dagster resources: the CoinGlass API client and the Parquet lake with its DuckDB catalog."""

from cg_assets.resources.coinglass import CoinGlassResource, MissingApiKeyError
from cg_assets.resources.lake import LakeResource

__all__ = ["CoinGlassResource", "LakeResource", "MissingApiKeyError"]
