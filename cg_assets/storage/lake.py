"""The lake: Parquet partitions, one file per (asset, UTC day), published atomically.

This module is the only code that knows where a day of an asset lives and how it is read:
every asset, check and sensor goes through `Lake.write_day`/`Lake.attach`. Runs are separate
processes and may overlap (a schedule, a sensor and a backfill at once), so the record must not
depend on a shared writer: each day is its own file, replaced whole. A reader sees the old day
or the new day, never half of one, and re-materializing a day replaces it.

The root is `<CG_LAKE_URL>/lake`, addressed through `pyarrow.fs` (`ws_sidecar.store`): by
default the local directory `CG_DATA_DIR/lake`, where a day is written to a temporary name,
fsync'd and renamed over the previous version; or a prefix in an S3-compatible store, where a
day is serialised in memory and sent in one PUT (over 5 MB, one multipart upload), which the
store shows whole or not at all (a rename is a copy there, so no temporary object is written).

DuckDB reads a local lake with `read_parquet`; an object-store lake through Arrow datasets
registered into the connection, so no DuckDB extension is ever downloaded (runs work offline
and the store's credentials stay with the AWS SDK). Such views live only in their
connection; see `Catalog` for what that means for `warehouse.duckdb`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from filelock import FileLock

from cg_assets.settings import Settings
from cg_assets.state_location import STATE_DSN_SETTING
from cg_assets.storage.locks import AdvisoryLock
from ws_sidecar.store import open_store, read_object

if TYPE_CHECKING:
    import pyarrow.dataset as ds

PART_NAME = "part-0.parquet"
# The hive key of every day directory; `attach` exposes it as a DATE column named the same.
DAY_KEY = "date"


class Lake:
    """The lake at `<url>/lake` (`url` default: `data_dir`). `data_dir` stays this node's own
    directory (the catalog file, local locks). `lock_dsn` is the state database whose
    advisory locks serialise writers of an object-store lake (see `cg_assets.storage.locks`)."""

    def __init__(
        self, data_dir: Path | str, url: str | None = None, lock_dsn: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.store = open_store(url or self.data_dir)
        self.fs: pafs.FileSystem = self.store.fs
        self.root = f"{self.store.root}/lake"
        self.is_local = self.store.is_local
        self._lock_dsn = lock_dsn

    @classmethod
    def for_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Lake:
        """The lake the code location's settings name, locked through CG_STATE_DSN if set."""
        env = os.environ if environ is None else environ
        lock_dsn = env.get(STATE_DSN_SETTING, "").strip() or None
        return cls(settings.data_dir, settings.lake_url, lock_dsn)

    # ------------------------------------------------------------------ where

    def location(self, asset: str) -> str:
        """Where `asset`'s days live within the lake's file system."""
        return f"{self.root}/{asset}"

    def url(self, asset: str) -> str:
        """Where `asset`'s days live, as metadata and messages show it (a path, or s3://...)."""
        return self.location(asset) if self.is_local else f"s3://{self.location(asset)}"

    def _day_dir(self, asset: str, day: date) -> str:
        return f"{self.location(asset)}/{DAY_KEY}={day.isoformat()}"

    def file(self, asset: str, day: date, name: str = PART_NAME) -> str:
        return f"{self._day_dir(asset, day)}/{name}"

    def _state_file(self, asset: str, name: str) -> str:
        # Beside the day directories: no `date=` key, so no day listing or view ever reads it.
        return f"{self.location(asset)}/{name}"

    def glob(self, asset: str) -> str:
        """A DuckDB pattern covering every day file of `asset` (temporary files never match)."""
        return f"{self.location(asset)}/{DAY_KEY}=*/*.parquet"

    def assets(self) -> list[str]:
        """Assets with at least one day directory."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def days(self, asset: str) -> list[date]:
        """The days of `asset` that hold a file."""
        selector = pafs.FileSelector(self.location(asset), allow_not_found=True, recursive=True)
        found = set()
        for info in self.fs.get_file_info(selector):
            parent, _, name = info.path.rpartition("/")
            key = parent.rpartition("/")[2]
            if name == PART_NAME and key.startswith(f"{DAY_KEY}="):
                found.add(date.fromisoformat(key.removeprefix(f"{DAY_KEY}=")))
        return sorted(found)

    def has_data(self, asset: str) -> bool:
        return bool(self.days(asset))

    def files(self, asset: str, days: Sequence[date]) -> list[str]:
        """The day files of `asset` among `days`, in day order; missing days are skipped."""
        wanted = [self.file(asset, d) for d in sorted(set(days))]
        infos = self.fs.get_file_info(wanted)
        return [i.path for i in infos if i.type == pafs.FileType.File]

    # ------------------------------------------------------------------ write

    def write_day(self, asset: str, day: date, table: pa.Table) -> str:
        """Replace one day of `asset` atomically; an empty table still replaces the day."""
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        return self._publish(self.file(asset, day), buffer.getvalue())

    def write_bytes(self, asset: str, day: date, name: str, data: bytes) -> str:
        """A companion file of one day (a picture), replaced atomically like the day itself."""
        return self._publish(self.file(asset, day, name), data)

    def write_state(self, asset: str, name: str, data: bytes) -> str:
        """A small record about the asset as a whole (not one day), replaced atomically."""
        return self._publish(self._state_file(asset, name), data)

    def _publish(self, final: str, data: bytes | pa.Buffer) -> str:
        if not self.is_local:
            # One upload: the store shows the object whole once it returns, or not at all.
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return final
        parent, _, name = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            _fsync(tmp)
            self.fs.move(tmp, final)
        finally:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)
        # Make the rename itself durable, so a crash cannot resurrect the previous version.
        _fsync(parent)
        return final

    def lock(
        self, asset: str, day: date, timeout_s: float = 300.0
    ) -> AbstractContextManager[object]:
        """Serialises read-modify-write of one day across processes (appending assets need it;
        assets that rewrite a whole day from the API do not)."""
        return self._lock(self.file(asset, day, ".lock"), timeout_s)

    def state_lock(
        self, asset: str, name: str, timeout_s: float = 60.0
    ) -> AbstractContextManager[object]:
        """Serialises read-modify-write of one state record (`write_state`) across processes."""
        return self._lock(self._state_file(asset, f".{name}.lock"), timeout_s)

    def _lock(self, path: str, timeout_s: float) -> AbstractContextManager[object]:
        """A file lock beside the object in a local lake; for an object-store lake, an advisory
        lock in the state database, or without one a file lock on this node."""
        if self.is_local:
            self.fs.create_dir(path.rpartition("/")[0], recursive=True)
            return FileLock(path, timeout=timeout_s)
        if self._lock_dsn:
            return AdvisoryLock(self._lock_dsn, f"s3://{path}", timeout_s)
        local = self.data_dir / "locks" / path.replace("/", "__")
        local.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(local), timeout=timeout_s)

    # ------------------------------------------------------------------ read

    def attach(
        self,
        con: duckdb.DuckDBPyConnection,
        asset: str,
        days: Sequence[date],
        schema: pa.Schema,
        name: str | None = None,
    ) -> int:
        """Expose `asset`'s rows of `days` as the view `name` (default: the asset's name).

        The view has the asset's declared columns plus `date` (the day the row is filed under),
        also when no day has a file yet, so a missing day flows through the same SQL as a
        present one. Files written under an older schema are read by column name. Returns how
        many day files the view reads.
        """
        view = name or asset
        paths = self.files(asset, days)
        if not paths or not self.is_local:
            # An Arrow table or dataset, registered under a name of its own for the view.
            source = (
                self._dataset(asset, paths, schema)
                if paths
                else schema.append(pa.field(DAY_KEY, pa.date32())).empty_table()
            )
            con.register(f"{view}__arrow", source)
            con.execute(f'CREATE OR REPLACE TEMP VIEW "{view}" AS SELECT * FROM "{view}__arrow"')
            return len(paths)
        con.execute(
            f'CREATE OR REPLACE TEMP VIEW "{view}" AS SELECT * FROM read_parquet('
            f"{_sql_list(paths)}, hive_partitioning = true, union_by_name = true)"
        )
        return len(paths)

    def attach_all(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """A view per asset over all its days (`attach` with the schema its files have):
        what a DuckDB session over an object-store lake has instead of the catalog's views."""
        attached = []
        for asset in self.assets():
            days = self.days(asset)
            paths = self.files(asset, days)
            if paths:
                schema = pa.unify_schemas([self.file_schema(p) for p in paths])
                self.attach(con, asset, days, schema)
                attached.append(asset)
        return attached

    def _dataset(self, asset: str, paths: Sequence[str], schema: pa.Schema) -> ds.Dataset:
        """The day files as one Arrow dataset: the declared columns (a column a file lacks is
        null, as `union_by_name` makes it) plus `date` from the hive directory."""
        import pyarrow.dataset as ds  # it imports pandas: only an object-store lake needs it

        day_key = pa.schema([pa.field(DAY_KEY, pa.date32())])
        return ds.dataset(
            list(paths),
            schema=pa.unify_schemas([schema.remove_metadata(), day_key]),
            format="parquet",
            filesystem=self.fs,
            partitioning=ds.partitioning(day_key, flavor="hive"),
            partition_base_dir=self.location(asset),
        )

    def read_days(self, asset: str, days: Sequence[date]) -> pa.Table | None:
        """The rows of `days` as Arrow (declared columns only), or None when none was written.

        Reads with an in-memory DuckDB, so reading never touches the catalog's lock; an
        object-store lake is read with Arrow, each file by column name as DuckDB would.
        """
        paths = self.files(asset, days)
        if not paths:
            return None
        if not self.is_local:
            tables = [pq.read_table(p, filesystem=self.fs, partitioning=None) for p in paths]
            return pa.concat_tables(tables, promote_options="permissive")
        con = duckdb.connect()
        try:
            return con.sql(
                "SELECT * FROM read_parquet($paths, hive_partitioning = false,"
                " union_by_name = true)",
                params={"paths": paths},
            ).to_arrow_table()
        finally:
            con.close()

    def read_state(self, asset: str, name: str) -> bytes | None:
        """A record written by `write_state`, or None if there is none yet."""
        path = self._state_file(asset, name)
        try:
            if self.is_local:
                with self.fs.open_input_stream(path) as stream:
                    return stream.read()
            return read_object(self.fs, path)
        except FileNotFoundError:
            return None

    def file_schema(self, path: str) -> pa.Schema:
        return pq.read_schema(path, filesystem=self.fs)

    def view_sql(self, view: str, asset: str) -> str:
        """The catalog's view over every day of `asset` in a local lake (see `Catalog`)."""
        glob = self.glob(asset).replace("'", "''")
        return (
            f'CREATE OR REPLACE VIEW "{view}" AS\n'
            f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true,"
            " union_by_name = true)"
        )


def _sql_list(paths: Sequence[str]) -> str:
    """Paths as a SQL list literal: views cannot take prepared parameters."""
    quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    return f"[{quoted}]"


def _fsync(path: str) -> None:
    """Local files and directories only: a PUT to an object store is durable when it returns."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
