"""Where a liquidation lands on a heatmap: its time bucket and its price bucket.

A price bucket is measured relative to a reference price, so a heatmap reads as "how far from
the price of the moment" rather than in dollars that drift over a day:
`bucket = floor((price / ref_price - 1) / grid)`, covering
`[ref_price * (1 + bucket * grid), ref_price * (1 + (bucket + 1) * grid))`.

Buckets are half-open, so a price exactly on an edge belongs to the bucket above it. Decimal
edges are rarely exact in binary floating point (100.25 / 100 - 1 is a hair below 0.0025), so
the floor is taken after adding `EDGE_TOLERANCE` bucket widths: a price within about 1e-9 of a
bucket width of an edge counts as on it. The DuckDB SQL and these functions perform the same
IEEE operations in the same order, so they agree to the bit.

Nothing here imports Dagster: the assets, the benchmark and the tests share these rules.
"""

from __future__ import annotations

import math

from cg_assets.coinglass.plans import DAY_MS, MINUTE_MS

EDGE_TOLERANCE = 1e-9  # in bucket widths
MAX_GRID = 0.1  # a 10% bucket already says little about where liquidations sit
DAY_MINUTES = DAY_MS // MINUTE_MS


def price_bucket(price: float, ref_price: float, grid: float) -> int:
    """Index of the grid bucket holding `price`, relative to `ref_price` (negative below it)."""
    return math.floor((price / ref_price - 1.0) / grid + EDGE_TOLERANCE)


def bucket_bounds(bucket: int, ref_price: float, grid: float) -> tuple[float, float]:
    """Absolute (low, high) prices of `bucket`; low is inclusive, high exclusive."""
    return ref_price * (1.0 + bucket * grid), ref_price * (1.0 + (bucket + 1) * grid)


def time_bucket(ts_ms: int, bucket_ms: int) -> int:
    """Start (ms) of the time bucket holding `ts_ms`; buckets are aligned to the Unix epoch."""
    return ts_ms // bucket_ms * bucket_ms


def check_grid(name: str, grid: float) -> float:
    """`grid` if it is a usable bucket width (a fraction of the price), else ValueError."""
    if not (math.isfinite(grid) and 0.0 < grid <= MAX_GRID):
        raise ValueError(
            f"{name}={grid!r}: expected a fraction of the price in (0, {MAX_GRID}],"
            " e.g. 0.0025 for 0.25% buckets"
        )
    return grid


def check_day_divisor(name: str, minutes: int) -> int:
    """`minutes` if whole buckets of it tile a UTC day, so no bucket straddles two partitions."""
    if minutes < 1 or DAY_MINUTES % minutes:
        raise ValueError(
            f"{name}={minutes!r}: expected a number of minutes that divides a day"
            " (1, 5, 15, 30, 60, 240, ...)"
        )
    return minutes
