"""Table helpers every domain shares: column contracts, day splits and check outcomes.

They sit on the lowest floor of the package (beside `settings` and `partitions`), so market,
liquidations, heatmaps, signals and alerts can all use them without importing one another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str


def schema_of(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in columns])


def column_schema(columns: Sequence[Column]) -> dg.TableSchema:
    """Column names, types and descriptions (with units) for the asset's page in the UI."""
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, str(c.type), description=c.description) for c in columns]
    )


def split_days(table: pa.Table, days: Sequence[date], column: str = "ts") -> dict[date, pa.Table]:
    """One table per UTC day in `days` by `column` (empty tables for days without rows)."""
    day_index = _day_index(table, column)
    return {day: table.filter(pc.equal(day_index, (day - _EPOCH).days)) for day in days}


def days_in(table: pa.Table, column: str = "ts") -> list[date]:
    """The UTC days the rows of `table` fall on, by `column`, in order."""
    indexes = pc.unique(_day_index(table, column).drop_null()).to_pylist()
    return sorted(date.fromordinal(_EPOCH.toordinal() + i) for i in indexes)


def _day_index(table: pa.Table, column: str) -> pa.Array:
    return pc.cast(
        pc.floor(pc.divide(pc.cast(table[column], pa.int64()), float(_DAY_MS))), pa.int64()
    )


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    summary: str
    details: dict[str, object] = field(default_factory=dict)


def check_results(
    outcomes: Iterable[CheckOutcome],
    asset_key: str | None = None,
    selected: Mapping[str, bool] | None = None,
) -> list[dg.AssetCheckResult]:
    """Outcomes as Dagster check results; `selected` (check name -> wanted) drops the rest."""
    return [
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=o.name,
            passed=o.passed,
            description=o.summary,
            metadata={k: _metadata_value(v) for k, v in o.details.items()},
        )
        for o in outcomes
        if selected is None or selected.get(o.name, False)
    ]


def _metadata_value(value: object) -> dg.MetadataValue:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return dg.MetadataValue.text(str(value))
    return dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(value)
