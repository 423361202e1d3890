"""Quality checks on what a market run wrote to the lake, for the shared read-back runner.

Each check is DuckDB SQL over the view `rows` of the run's days (see
`cg_assets.storage.checks`), with the day taken from the hive path, so "bars inside the
partition's day" tests the layout too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import partial

import duckdb
import pyarrow as pa

from cg_assets.coinglass.plans import DAY_MS
from cg_assets.market.series import MarketAsset
from cg_assets.storage.checks import Check
from cg_assets.tables import CheckOutcome

CHECKS: dict[str, str] = {
    "schema": "Columns and types match the asset's contract.",
    "unique_key": "No two rows share the key (ts, symbol and exchange/scope/weighting).",
    "complete_bars": "Every configured series has every bar of each closed day.",
    "value_ranges": "No nulls; percentages within 0-100, prices and OI > 0, volumes >= 0.",
    "bars_in_partition": "Every bar starts inside the UTC day of the partition file holding it.",
}

DUPLICATES_SQL = """
SELECT {key}, count(*) AS copies
FROM rows
GROUP BY ALL
HAVING count(*) > 1
ORDER BY copies DESC
LIMIT 5
"""

BAR_COUNTS_SQL = """
SELECT date, {series}, count(DISTINCT ts) AS bars
FROM rows
WHERE date IN (SELECT unnest($closed_days))
GROUP BY ALL
"""

OUTSIDE_DAY_SQL = """
SELECT count(*)
FROM rows
WHERE epoch_ms(ts) < epoch_ms(date::TIMESTAMP)
   OR epoch_ms(ts) >= epoch_ms(date::TIMESTAMP) + $day_ms
"""


def market_checks(
    asset: MarketAsset,
    expected_series: Sequence[tuple[str, ...]],
    closed_days: Sequence[date],
    interval_ms: int,
) -> dict[str, Check]:
    """The checks after `schema` (which the runner always does), by name."""
    return {
        "unique_key": partial(_unique_key, asset=asset),
        "complete_bars": partial(
            _complete_bars,
            asset=asset,
            expected_series=expected_series,
            closed_days=closed_days,
            interval_ms=interval_ms,
        ),
        "value_ranges": partial(_value_ranges, asset=asset),
        "bars_in_partition": _bars_in_partition,
    }


def _unique_key(con: duckdb.DuckDBPyConnection, *, asset: MarketAsset) -> CheckOutcome:
    rows = con.execute(DUPLICATES_SQL.format(key=", ".join(asset.key))).fetchall()
    if rows:
        return CheckOutcome(
            "unique_key",
            False,
            f"duplicate keys, e.g. {rows[0]}",
            {"examples": [str(r) for r in rows]},
        )
    return CheckOutcome("unique_key", True, f"key {asset.key} is unique")


def _complete_bars(
    con: duckdb.DuckDBPyConnection,
    *,
    asset: MarketAsset,
    expected_series: Sequence[tuple[str, ...]],
    closed_days: Sequence[date],
    interval_ms: int,
) -> CheckOutcome:
    if not closed_days:
        return CheckOutcome("complete_bars", True, "no closed day in this run; nothing to check")
    per_day = DAY_MS // interval_ms
    counts = {
        (row[0], tuple(row[1:-1])): row[-1]
        for row in con.execute(
            BAR_COUNTS_SQL.format(series=", ".join(asset.series_key)),
            {"closed_days": list(closed_days)},
        ).fetchall()
    }
    short = [
        f"{day} {'/'.join(series)}: {counts.get((day, series), 0)} of {per_day}"
        for day in closed_days
        for series in expected_series
        if counts.get((day, series), 0) != per_day
    ]
    if short:
        return CheckOutcome(
            "complete_bars",
            False,
            f"{len(short)} series-day(s) incomplete",
            {"incomplete": short[:10]},
        )
    return CheckOutcome(
        "complete_bars",
        True,
        f"{len(expected_series)} series x {len(closed_days)} closed day(s), {per_day} bars each",
    )


def _value_ranges(con: duckdb.DuckDBPyConnection, *, asset: MarketAsset) -> CheckOutcome:
    numeric = [c.name for c in asset.columns if pa.types.is_floating(c.type)]
    conditions = {f"{c} is null or NaN": f"{c} IS NULL OR isnan({c})" for c in numeric}
    for column, (low, high, low_inclusive) in asset.ranges.items():
        if low is not None:
            conditions[f"{column} {'<' if low_inclusive else '<='} {low:g}"] = (
                f"{column} {'<' if low_inclusive else '<='} {low}"
            )
        if high is not None:
            conditions[f"{column} > {high:g}"] = f"{column} > {high}"
    if not conditions:
        return CheckOutcome("value_ranges", True, "no numeric bounds for this asset")
    select = ", ".join(f"count(*) FILTER (WHERE {sql})" for sql in conditions.values())
    counts = con.execute(f"SELECT {select} FROM rows").fetchone() or ()
    violations = {label: n for label, n in zip(conditions, counts, strict=True) if n}
    if violations:
        return CheckOutcome("value_ranges", False, f"out-of-range values: {violations}", violations)
    return CheckOutcome("value_ranges", True, f"{len(conditions)} bound(s) hold")


def _bars_in_partition(con: duckdb.DuckDBPyConnection) -> CheckOutcome:
    outside = (con.execute(OUTSIDE_DAY_SQL, {"day_ms": DAY_MS}).fetchone() or (0,))[0]
    if outside:
        return CheckOutcome("bars_in_partition", False, f"{outside} bar(s) outside their day")
    return CheckOutcome("bars_in_partition", True, "every bar is inside its partition's day")
