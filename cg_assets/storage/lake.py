"""The lake: Parquet partitions, one file per (asset, UTC day), published atomically.

This module is the only code that knows where a day of an asset lives and how it is read:
every asset, check and sensor goes through `Lake.write_day`/`Lake.attach`. Runs are separate
processes and may overlap (a schedule, a sensor and a backfill at once), so the record must not
depend on a shared writer: each day is its own file, written to a temporary name and renamed
over the previous version. A reader sees the old day or the new day, never half of one, and
re-materializing a day replaces it.

The root is addressed through `pyarrow.fs`, so an object-store root later changes this module
only; today it is a local directory (`CG_DATA_DIR/lake`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from filelock import FileLock

PART_NAME = "part-0.parquet"
# The hive key of every day directory; `attach` exposes it as a DATE column named the same.
DAY_KEY = "date"


class Lake:
    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.root = self.data_dir / "lake"
        self.fs: pafs.FileSystem = pafs.LocalFileSystem()

    # ------------------------------------------------------------------ where

    def location(self, asset: str) -> str:
        """Where `asset`'s days live, for metadata and the catalog."""
        return str(self.root / asset)

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
        infos = self.fs.get_file_info(pafs.FileSelector(str(self.root), allow_not_found=True))
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
        final = self.file(asset, day)

        def write(tmp: str) -> None:
            pq.write_table(table, tmp, compression="zstd", filesystem=self.fs)

        self._publish(final, write)
        return final

    def write_bytes(self, asset: str, day: date, name: str, data: bytes) -> str:
        """A companion file of one day (a picture), replaced atomically like the day itself."""
        final = self.file(asset, day, name)

        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)

        self._publish(final, write)
        return final

    def write_state(self, asset: str, name: str, data: bytes) -> str:
        """A small record about the asset as a whole (not one day), replaced atomically."""
        final = self._state_file(asset, name)

        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)

        self._publish(final, write)
        return final

    def _publish(self, final: str, write: Callable[[str], None]) -> None:
        parent, _, name = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            write(tmp)
            _fsync(tmp)
            self.fs.move(tmp, final)
        finally:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)
        # Make the rename itself durable, so a crash cannot resurrect the previous version.
        _fsync(parent)

    def lock(self, asset: str, day: date, timeout_s: float = 300.0) -> FileLock:
        """Serialises read-modify-write of one day across processes (appending assets need it;
        assets that rewrite a whole day from the API do not)."""
        return self._lock(self.file(asset, day, ".lock"), timeout_s)

    def state_lock(self, asset: str, name: str, timeout_s: float = 60.0) -> FileLock:
        """Serialises read-modify-write of one state record (`write_state`) across processes."""
        return self._lock(self._state_file(asset, f".{name}.lock"), timeout_s)

    def _lock(self, path: str, timeout_s: float) -> FileLock:
        self.fs.create_dir(path.rpartition("/")[0], recursive=True)
        return FileLock(path, timeout=timeout_s)

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
        if not paths:
            empty = schema.append(pa.field(DAY_KEY, pa.date32())).empty_table()
            con.register(f"{view}__empty", empty)
            con.execute(f'CREATE OR REPLACE TEMP VIEW "{view}" AS SELECT * FROM "{view}__empty"')
            return 0
        con.execute(
            f'CREATE OR REPLACE TEMP VIEW "{view}" AS SELECT * FROM read_parquet('
            f"{_sql_list(paths)}, hive_partitioning = true, union_by_name = true)"
        )
        return len(paths)

    def read_days(self, asset: str, days: Sequence[date]) -> pa.Table | None:
        """The rows of `days` as Arrow (declared columns only), or None when none was written.

        Reads with an in-memory DuckDB, so reading never touches the catalog's lock.
        """
        paths = self.files(asset, days)
        if not paths:
            return None
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
        try:
            with self.fs.open_input_stream(self._state_file(asset, name)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def file_schema(self, path: str) -> pa.Schema:
        return pq.read_schema(path, filesystem=self.fs)

    def view_sql(self, view: str, asset: str) -> str:
        """The catalog's view over every day of `asset` (see `Catalog`)."""
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
