"""CoinGlass V4 REST client (plain Python, no Dagster): `CoinGlassClient` and its errors."""

from cg_assets.coinglass import plans
from cg_assets.coinglass.client import (
    EXCHANGE_PAIRS_PATH,
    PAGE_LIMIT,
    ClientStats,
    CoinGlassClient,
    coerce_row,
    pick_perpetual,
)
from cg_assets.coinglass.errors import (
    CoinGlassAuthError,
    CoinGlassBadRequest,
    CoinGlassError,
    CoinGlassNotFound,
    CoinGlassPlanError,
    CoinGlassProtocolError,
    CoinGlassRateLimited,
    CoinGlassServerError,
    CoinGlassTimeout,
    PairNotListedError,
)
from cg_assets.coinglass.pagination import merge_bars, windows
from cg_assets.coinglass.plans import Plan
from cg_assets.coinglass.ratelimit import RateLimiter, shared_limiter

__all__ = [
    "EXCHANGE_PAIRS_PATH",
    "PAGE_LIMIT",
    "ClientStats",
    "CoinGlassAuthError",
    "CoinGlassBadRequest",
    "CoinGlassClient",
    "CoinGlassError",
    "CoinGlassNotFound",
    "CoinGlassPlanError",
    "CoinGlassProtocolError",
    "CoinGlassRateLimited",
    "CoinGlassServerError",
    "CoinGlassTimeout",
    "PairNotListedError",
    "Plan",
    "RateLimiter",
    "coerce_row",
    "merge_bars",
    "pick_perpetual",
    "plans",
    "shared_limiter",
    "windows",
]
