"""The DuckDB catalog: `warehouse.duckdb` holding one view per asset over its Parquet files.

DuckDB lets one process hold a database file for writing, and a user's open DuckDB session
holds it for as long as it stays open. So the catalog is written as rarely as possible: a view
reads every day of its asset through a glob, so it only has to be (re)created when the asset
appears or its location changes. A small state file remembers the view definitions already
written; in steady state runs never open the catalog at all. When a write is needed and the file
is locked, the write is deferred (the Parquet record is already complete) and the next run, or
`python -m cg_assets.storage.catalog`, finishes it.

An object-store lake (`CG_LAKE_URL=s3://...`) is read through Arrow datasets registered
into a connection (`Lake.attach`), which no DuckDB file can keep: a view in `warehouse.duckdb`
could only name the store through DuckDB's S3 extension, which is downloaded at run time
(impossible offline) and would need the store's credentials in every session. So for such a
lake the catalog writes nothing (`ensure_views` reports the views as per-session) and
`Catalog.session()` gives a DuckDB connection with one view per asset over every day,
made for that session; for a local lake it opens `warehouse.duckdb` read-only. Either way,
`session()` is the one way to query the whole lake.

The connection itself comes from the caller (in a run: dagster-duckdb's `DuckDBResource`
for the warehouse file). That resource retries a locked file for about 100 s, so the catalog
first probes the file with a short bounded wait and defers instead when a user's session holds
it: a run never waits on the catalog.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from cg_assets.storage.lake import Lake

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


@dataclass
class CatalogStatus:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    reason: str = ""
    # Assets of an object-store lake: their views exist only in `Catalog.session()`.
    per_session: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.per_session:
            return (
                f"views of {', '.join(self.per_session)} are made per session"
                " (object-store lake: Catalog.session())"
            )
        if self.deferred:
            return f"deferred {', '.join(self.deferred)}: {self.reason}"
        if self.created:
            return f"created views {', '.join(self.created)}"
        return "views up to date"


def warehouse_path(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / "warehouse.duckdb"


class Catalog:
    def __init__(
        self, lake: Lake, connect: Connect | None = None, connect_timeout_s: float = 10.0
    ) -> None:
        self.lake = lake
        self.path = warehouse_path(lake.data_dir)
        self._connect = connect or self._plain_connect
        self.connect_timeout_s = connect_timeout_s
        self._state_path = lake.data_dir / ".catalog_state.json"
        self._lock = FileLock(str(self.path) + ".lock")
        # Once a write was deferred, later assets of the same run defer at once instead of
        # each waiting out the timeout again.
        self._deferred_reason = ""

    def view_sql(self, asset: str) -> str:
        return self.lake.view_sql(asset, asset)

    def ensure_views(self, assets: Iterable[str]) -> CatalogStatus:
        """Create the views that are missing or stale; never raise on a lock."""
        status = CatalogStatus()
        if not self.lake.is_local:
            status.per_session = sorted(assets)
            return status
        wanted = {a: self.view_sql(a) for a in assets if self.lake.has_data(a)}
        state = self._read_state()
        todo = {a: sql for a, sql in wanted.items() if state.get("views", {}).get(a) != sql}
        status.unchanged = sorted(set(wanted) - set(todo))
        if not todo:
            return status
        if self._deferred_reason:
            status.deferred, status.reason = sorted(todo), self._deferred_reason
            return status
        try:
            with self._lock.acquire(timeout=self.connect_timeout_s):
                self._write_views(todo)
        except (Timeout, duckdb.IOException) as exc:
            status.deferred = sorted(todo)
            status.reason = self._deferred_reason = _lock_reason(exc)
            log.warning("catalog update %s", status.summary)
            return status
        status.created = sorted(todo)
        return status

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with a view per asset over all its days (see the module)."""
        if self.lake.is_local:
            self.ensure_views(self.lake.assets())
            con = duckdb.connect(str(self.path), read_only=True)
        else:
            con = duckdb.connect()
            self.lake.attach_all(con)
        try:
            yield con
        finally:
            con.close()

    def _write_views(self, todo: dict[str, str]) -> None:
        self._probe()
        with self._connect() as con:
            for sql in todo.values():
                con.execute(sql)
        state = self._read_state()
        state.setdefault("views", {}).update(todo)
        state["catalog_inode"] = os.stat(self.path).st_ino
        self._write_state(state)

    def _probe(self) -> None:
        """Raise IOException unless the file can be opened read-write within the timeout."""
        deadline = time.monotonic() + self.connect_timeout_s
        delay = 0.05
        while True:
            try:
                duckdb.connect(str(self.path)).close()
                return
            except duckdb.IOException:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def _plain_connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = duckdb.connect(str(self.path))
        try:
            yield con
        finally:
            con.close()

    def _read_state(self) -> dict:
        """The views already written, forgotten when the catalog file was removed or replaced."""
        try:
            state = json.loads(self._state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        try:
            if os.stat(self.path).st_ino != state.get("catalog_inode"):
                return {}
        except FileNotFoundError:
            return {}
        return state

    def _write_state(self, state: dict) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self._state_path)


def _lock_reason(exc: BaseException) -> str:
    if isinstance(exc, Timeout):
        return "another run is updating the catalog"
    return (
        "warehouse.duckdb is held open by another process (a DuckDB session?); the Parquet data"
        " is complete and the views are created by the next run or by"
        " `python -m cg_assets.storage.catalog`"
    )


def main(argv: list[str] | None = None) -> None:
    """Create every missing view now (e.g. after closing a DuckDB session that held the file);
    with a SQL statement as the argument, run it over the whole lake and print the rows, which
    is how an object-store lake is queried from a shell."""
    from cg_assets.settings import Settings

    args = sys.argv[1:] if argv is None else argv
    catalog = Catalog(Lake.for_settings(Settings.from_env()), connect_timeout_s=30.0)
    if not args:
        print(catalog.ensure_views(catalog.lake.assets()).summary)
        return
    with catalog.session() as con:
        result = con.sql(" ".join(args))
        print("\t".join(result.columns))
        for row in result.fetchall():
            print("\t".join(map(str, row)))


if __name__ == "__main__":
    main()
