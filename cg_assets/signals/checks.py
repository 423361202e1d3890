"""Quality checks on what a signals-group run wrote, read back from its Parquet days.

Each asset names its checks as SQL counting offending rows over the view `rows`; the schema is
compared file by file, so a day written with a drifted type fails even when its values are fine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cg_assets.market.checks import CheckOutcome

SCHEMA_CHECK = "schema"


def check_results(
    paths: Sequence[str], schema: pa.Schema, offending_sql: Mapping[str, str]
) -> Iterator[dg.AssetCheckResult]:
    """`run_checks` as the asset's check results."""
    for outcome in run_checks(paths, schema, offending_sql):
        yield dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            description=outcome.summary,
            metadata={k: dg.MetadataValue.text(str(v)) for k, v in outcome.details.items()},
        )


def run_checks(
    paths: Sequence[str], schema: pa.Schema, offending_sql: Mapping[str, str]
) -> list[CheckOutcome]:
    """The schema check, then each named query's count of offending rows (0 passes)."""
    outcomes = [_schema(paths, schema)]
    con = duckdb.connect()
    try:
        con.read_parquet(list(paths)).create_view("rows")
        for name, sql in offending_sql.items():
            (bad,) = con.execute(sql).fetchone() or (0,)
            outcomes.append(
                CheckOutcome(
                    name,
                    bad == 0,
                    f"{bad} offending row(s)" if bad else f"{len(paths)} day file(s) pass",
                    {"offending_rows": bad},
                )
            )
    finally:
        con.close()
    return outcomes


def _schema(paths: Sequence[str], schema: pa.Schema) -> CheckOutcome:
    drifted = [
        f"{path}: {actual.to_string(show_schema_metadata=False)}"
        for path in paths
        if not (actual := pq.read_schema(path)).equals(schema, check_metadata=False)
    ]
    if drifted:
        return CheckOutcome(
            SCHEMA_CHECK, False, f"{len(drifted)} file(s) differ", {"files": drifted[:3]}
        )
    return CheckOutcome(SCHEMA_CHECK, True, f"{len(paths)} file(s) match the contract")
