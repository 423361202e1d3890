"""The lake (Parquet, the record) and its DuckDB catalog as Dagster resources.

DuckDB connections come from dagster-duckdb's `DuckDBResource`: an in-memory one for the
computing assets do over lake views (`duckdb`), and one for the warehouse file holding the
catalog's views (`warehouse`). Only the catalog opens the warehouse, and only when a view is
missing, so runs never queue behind the file's single writer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from cg_assets.storage import Catalog, CatalogStatus, Lake
from cg_assets.storage.catalog import warehouse_path
from cg_assets.storage.checks import Check, run_checks
from cg_assets.tables import CheckOutcome, check_results, split_days

PREVIEW_ROWS = 8
# Day files written at once by `publish`.
DAY_WRITERS = 8
# Metadata describing the stored days one by one (see `Published.by_partition`).
PER_DAY_KEYS = frozenset({"dagster/row_count", "first_ts", "last_ts", "preview"})
# (stored rows of the day or None, the new rows) -> the day to store, or None if unchanged.
Merge = Callable[[pa.Table | None, pa.Table], pa.Table | None]


@dataclass(frozen=True)
class Published:
    """What `LakeResource.publish` wrote, and the standard metadata describing it."""

    files: dict[date, str]
    catalog: CatalogStatus
    metadata: dict[str, Any]
    # Each stored day's own row count and timestamp bounds.
    day_metadata: dict[date, dict[str, Any]]

    def by_partition(self) -> tuple[dict[str, Any], dict[date, dict[str, Any]]]:
        """The metadata every partition's materialization shares, and each day's own.

        A run over many days records one materialization event per day, each carrying the
        shared metadata, so it is stored once per day: a year's backfill stores 365 copies.
        The shared part therefore keeps what describes the run as a whole, each day gets its
        own row count and bounds (not the run's total), and the preview table goes with the
        last day only. A one-day run keeps the whole metadata on its one event.
        """
        if len(self.day_metadata) <= 1:
            return self.metadata, {}
        shared = {k: v for k, v in self.metadata.items() if k not in PER_DAY_KEYS}
        own = {day: dict(meta) for day, meta in self.day_metadata.items()}
        if "preview" in self.metadata:
            own[max(own)]["preview"] = self.metadata["preview"]
        return shared, own


class LakeResource(dg.ConfigurableResource):
    """Where assets write their days (`lake_url`, default `data_dir`) and where the catalog of
    views lives (`data_dir`, always this node's own directory). `state_dsn` (given as
    EnvVar("CG_STATE_DSN"), so it is never shown) holds the locks of an object-store lake.

    One `Lake` and one `Catalog` per run (made in setup): the catalog remembers a deferred
    (locked) write, so later assets of the run defer at once instead of waiting again.
    """

    data_dir: str
    lake_url: str | None = None
    state_dsn: str | None = None
    warehouse: DuckDBResource
    duckdb: DuckDBResource
    # How long a run waits for a user's session to release warehouse.duckdb before deferring.
    catalog_timeout_s: float = 10.0

    _lake: Lake | None = PrivateAttr(default=None)
    _catalog: Catalog | None = PrivateAttr(default=None)

    @classmethod
    def at(cls, data_dir: Path | str, **kwargs: Any) -> LakeResource:
        """The lake of `data_dir` with its warehouse file and in-memory DuckDB connections."""
        return cls(
            data_dir=str(data_dir),
            warehouse=DuckDBResource(database=str(warehouse_path(Path(data_dir)))),
            duckdb=DuckDBResource(database=":memory:"),
            **kwargs,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._lake = self._new_lake()
        self._catalog = self._new_catalog()

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = self._new_lake()
        return self._lake

    def _new_lake(self) -> Lake:
        return Lake(self.data_dir, self.lake_url, self.state_dsn)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._new_catalog()
        return self._catalog

    def _new_catalog(self) -> Catalog:
        return Catalog(self.lake, self.warehouse.get_connection, self.catalog_timeout_s)

    def connect(self) -> Any:
        """An in-memory DuckDB connection (a context manager) for work over lake views."""
        return self.duckdb.get_connection()

    def publish(
        self,
        asset: str,
        table: pa.Table,
        days: Sequence[date],
        split_on: str | None = "ts",
        merge: Merge | None = None,
    ) -> Published:
        """Write `table` as the days `days` of `asset`, refresh the catalog, describe it.

        Rows are split by the UTC day of `split_on`; every day in `days` is replaced, an empty
        one too (a re-run that finds nothing must not leave stale rows). With `split_on=None`
        the whole table is one day (a snapshot filed under the day it was taken). With `merge`,
        each day is read, merged with its new rows and written back under the day's lock (for
        assets that append); `merge` returns None when the day is unchanged. The metadata
        describes the days as stored; only one stored day is held at a time, so appending to
        many large days costs the memory of one.
        """
        if split_on is None:
            [day] = days
            parts = {day: table}
        else:
            parts = split_days(table, days, split_on)
        files: dict[date, str] = {}
        stored = _Stored()
        if merge is None:
            # Days are independent files; writing them side by side overlaps their fsyncs,
            # which is most of a year's backfill's write time.
            with ThreadPoolExecutor(max_workers=DAY_WRITERS) as pool:
                written = pool.map(lambda item: self.lake.write_day(asset, *item), parts.items())
                files = dict(zip(parts, written, strict=True))
            for day, part in parts.items():
                stored.add(day, part)
        else:
            for day, part in parts.items():
                with self.lake.lock(asset, day):
                    existing = self.lake.read_days(asset, [day])
                    merged = merge(existing, part)
                    if merged is not None:
                        files[day] = self.lake.write_day(asset, day, merged)
                    final = merged if merged is not None else existing
                    stored.add(
                        day,
                        None
                        if final is None
                        else final.select(table.schema.names).cast(table.schema),
                    )
        status = self.catalog.ensure_views([asset])
        return Published(
            files, status, _metadata(asset, stored, days, status, self.lake), stored.by_day
        )

    def checks(
        self,
        asset: str,
        days: Sequence[date],
        schema: pa.Schema,
        checks: Mapping[str, Check],
    ) -> list[CheckOutcome]:
        """The read-back checks of `days` (see `cg_assets.storage.checks`)."""
        with self.connect() as con:
            return run_checks(con, self.lake, asset, days, schema, checks)

    def check_results(
        self,
        asset: str,
        days: Sequence[date],
        schema: pa.Schema,
        checks: Mapping[str, Check],
        selected: Iterable[str] | None = None,
    ) -> Iterator[dg.AssetCheckResult]:
        outcomes = self.checks(asset, days, schema, checks)
        wanted = None if selected is None else dict.fromkeys(selected, True)
        yield from check_results(outcomes, asset_key=asset, selected=wanted)


@dataclass
class _Stored:
    """What `_metadata` needs of the stored days, gathered one day at a time."""

    rows: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    tail: pa.Table | None = None
    by_day: dict[date, dict[str, Any]] = field(default_factory=dict)

    def add(self, day: date, table: pa.Table | None) -> None:
        rows = 0 if table is None else table.num_rows
        self.rows += rows
        self.by_day[day] = {"dagster/row_count": rows}
        if table is None or not rows:
            return
        if "ts" in table.column_names:
            bounds = pc.min_max(table["ts"])
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            self.by_day[day] |= {
                "first_ts": dg.MetadataValue.timestamp(low),
                "last_ts": dg.MetadataValue.timestamp(high),
            }
            self.first_ts = low if self.first_ts is None else min(self.first_ts, low)
            self.last_ts = high if self.last_ts is None else max(self.last_ts, high)
        tail = table if self.tail is None else pa.concat_tables([self.tail, table])
        self.tail = tail.slice(max(0, tail.num_rows - PREVIEW_ROWS))


def _metadata(
    asset: str, stored: _Stored, days: Sequence[date], status: CatalogStatus, lake: Lake
) -> dict[str, Any]:
    first, last = min(days), max(days)
    metadata: dict[str, Any] = {
        "dagster/row_count": stored.rows,
        "days_written": len(days),
        "lake_path": dg.MetadataValue.path(lake.url(asset)),
        "catalog": status.summary,
        "duckdb_query": dg.MetadataValue.md(
            f"```sql\nSELECT * FROM {asset}\nWHERE date BETWEEN '{first}' AND '{last}'\n```"
        ),
    }
    if stored.first_ts is not None:
        metadata["first_ts"] = dg.MetadataValue.timestamp(stored.first_ts)
        metadata["last_ts"] = dg.MetadataValue.timestamp(stored.last_ts)
    if stored.tail is not None:
        metadata["preview"] = preview(stored.tail)
    return metadata


def preview(table: pa.Table) -> dg.MetadataValue:
    """The rows as a table in the UI; timestamps as ISO text, so they read as they are stored,
    and lists as JSON text (a table cell holds only scalars)."""
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in table.to_pylist()]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                "string"
                if pa.types.is_temporal(f.type) or pa.types.is_list(f.type)
                else str(f.type),
            )
            for f in table.schema
        ]
    )
    return dg.MetadataValue.table(records=records, schema=schema)


def _cell(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return json.dumps(value, default=str)
    return value
