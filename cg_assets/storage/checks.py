"""One read-back check runner for every asset: the checks read what the run stored.

Checks run over the Parquet days as written (not the in-memory table the run built), so they
catch a bad write as well as a bad answer. Every asset's checks are the schema check (each day
file against the declared schema, so a day written with a drifted type fails even when its
values are fine) plus named queries over the view `rows` (the declared columns and `date`, the
day the row is filed under): a SQL string counting offending rows (0 passes), or a function of
the connection for checks that need more than a count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date

import duckdb
import pyarrow as pa

from cg_assets.storage.lake import Lake
from cg_assets.tables import CheckOutcome

SCHEMA_CHECK = "schema"
ROWS_VIEW = "rows"

Check = str | Callable[[duckdb.DuckDBPyConnection], CheckOutcome]


def run_checks(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    asset: str,
    days: Sequence[date],
    schema: pa.Schema,
    checks: Mapping[str, Check],
) -> list[CheckOutcome]:
    """The schema check, then each named check over the view `rows` of `days`."""
    files = lake.files(asset, days)
    outcomes = [_schema(lake, files, schema)]
    lake.attach(con, asset, days, schema, name=ROWS_VIEW)
    for name, check in checks.items():
        if callable(check):
            outcomes.append(check(con))
            continue
        (bad,) = con.execute(check).fetchone() or (0,)
        summary = f"{bad} offending row(s)" if bad else f"{len(files)} day file(s) pass"
        outcomes.append(CheckOutcome(name, bad == 0, summary, {"offending_rows": bad}))
    return outcomes


def _schema(lake: Lake, files: Sequence[str], schema: pa.Schema) -> CheckOutcome:
    drifted = [
        f"{path}: {actual.to_string(show_schema_metadata=False)}"
        for path in files
        if not (actual := lake.file_schema(path)).equals(schema, check_metadata=False)
    ]
    if drifted:
        return CheckOutcome(
            SCHEMA_CHECK, False, f"{len(drifted)} file(s) differ", {"files": drifted[:3]}
        )
    return CheckOutcome(SCHEMA_CHECK, True, f"{len(files)} file(s) match the contract")
