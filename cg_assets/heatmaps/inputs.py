"""The heatmaps' inputs: how far back they read, and one price series per coin.

Heatmaps read the lake with DuckDB over views `Lake.attach` makes (not through IO managers): a
day of liquidations can hold millions of rows, and DuckDB scans only the columns a query names.
A view over no files at all is an empty table of the asset's schema, so a coin or a day without
data flows through the same SQL instead of needing its own branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import duckdb

from cg_assets.coinglass.plans import DAY_MS

# One price per coin and bar: the median over the exchanges that reported the bar, the lower
# of the two middle values for an even count (quantile_disc), so it is always a price some
# exchange printed and is reproduced bit for bit by any reference implementation. A coin's
# price must not depend on which exchange happens to come first, and the median shrugs off one
# exchange's wick or stale print. `close_ms` (bar start + interval) is when the bar's close
# became known: joins on it never look ahead.
COIN_BARS_SQL = """
CREATE OR REPLACE TEMP TABLE coin_bars AS
SELECT
    symbol,
    epoch_ms(ts) AS ts_ms,
    epoch_ms(ts) + $interval_ms AS close_ms,
    quantile_disc(high, 0.5) AS high,
    quantile_disc(low, 0.5) AS low,
    quantile_disc(close, 0.5) AS close
FROM price_ohlc
WHERE close > 0
GROUP BY symbol, epoch_ms(ts)
"""


def extra_days(span_ms: int) -> int:
    """Whole days needed to look `span_ms` back from a midnight."""
    return -(-span_ms // DAY_MS)


def lookback_days(days: Sequence[date], span_ms: int) -> list[date]:
    """`days` preceded by enough whole days to cover `span_ms` before the first of them."""
    extra = extra_days(span_ms)
    return [days[0] - timedelta(days=n) for n in range(extra, 0, -1)] + list(days)


def coin_bars(con: duckdb.DuckDBPyConnection, interval_ms: int) -> None:
    """Create `coin_bars` from the `price_ohlc` view (see COIN_BARS_SQL)."""
    con.execute(COIN_BARS_SQL, {"interval_ms": interval_ms})
