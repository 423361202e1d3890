"""Parquet partitions, one file per (asset, UTC day), published by atomic rename.

Runs are separate processes and may overlap (a schedule, a sensor and a backfill at once), so
the record must not depend on a shared writer: each day is its own file, written to a temporary
name, fsync'd and renamed over the previous version. A reader sees the old day or the new day,
never half of one, and re-materializing a day replaces it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

PART_NAME = "part-0.parquet"


class Lake:
    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.root = self.data_dir / "lake"

    def asset_dir(self, asset: str) -> Path:
        return self.root / asset

    def partition_path(self, asset: str, day: date) -> Path:
        return self.asset_dir(asset) / f"date={day.isoformat()}" / PART_NAME

    def glob(self, asset: str) -> str:
        """The read_parquet pattern covering every day of `asset` (temp files never match)."""
        return str(self.asset_dir(asset) / "date=*" / "*.parquet")

    def has_data(self, asset: str) -> bool:
        return any(self.asset_dir(asset).glob("date=*/*.parquet"))

    def write_day(self, asset: str, day: date, table: pa.Table) -> Path:
        """Replace one day of `asset` atomically; an empty table still replaces the day."""
        final = self.partition_path(asset, day)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(final.parent)
        return final

    def lock(self, asset: str, day: date, timeout_s: float = 300.0) -> FileLock:
        """Serialises read-modify-write of one day across processes (appending assets need it;
        assets that rewrite a whole day from the API do not)."""
        path = self.partition_path(asset, day).parent / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), timeout=timeout_s)

    def existing_paths(self, asset: str, days: Iterable[date]) -> list[str]:
        return [str(p) for d in days if (p := self.partition_path(asset, d)).exists()]

    def read_days(self, asset: str, days: Sequence[date]) -> pa.Table | None:
        """The rows of `days` as Arrow, or None when none of them was written yet.

        Uses an in-memory DuckDB connection, so reading never touches the catalog's lock.
        """
        paths = self.existing_paths(asset, days)
        if not paths:
            return None
        con = duckdb.connect()
        try:
            return con.sql(
                "SELECT * FROM read_parquet($paths, union_by_name = true)",
                params={"paths": paths},
            ).to_arrow_table()
        finally:
            con.close()


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable, so a crash cannot resurrect the previous version."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
