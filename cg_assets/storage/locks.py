"""Locks serialising read-modify-write of one lake object across runs (`Lake.lock`).

A local lake keeps its file locks beside the days: every process that sees the directory
shares them. An object store has no locks, and a lake there is written by runs on any node,
so its locks live where every node already goes for shared state: PostgreSQL advisory locks
in the state database (`CG_STATE_DSN`). Why advisory locks and not a lock object in the
store or a lease row: PostgreSQL releases an advisory lock when its holder's connection ends,
so a run killed with -9, or a node that vanishes, frees it at once with no expiry to tune and
no stale lock to clear by hand; pyarrow's S3 client offers no conditional writes to build a
lock on, and a lease would have to outlive the slowest merge yet expire soon after a crash.
Without a state DSN (one node with an object-store lake, as in the tests) a file lock under
`CG_DATA_DIR/locks` serves the processes of that node.
"""

from __future__ import annotations

import hashlib
import time
from types import TracebackType

TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%(key)s)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%(key)s)"
MAX_POLL_S = 0.5


class LockTimeout(TimeoutError):
    """The lock stayed held by another run for the whole wait; names the lock, never the DSN."""


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (what PostgreSQL's advisory locks are keyed by)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on its own connection, held for a `with`."""

    def __init__(self, dsn: str, name: str, timeout_s: float) -> None:
        self._dsn = dsn
        self.name = name
        self.key = advisory_key(name)
        self.timeout_s = timeout_s
        self._con = None

    def __enter__(self) -> AdvisoryLock:
        import psycopg2

        con = psycopg2.connect(self._dsn)
        con.autocommit = True
        deadline = time.monotonic() + self.timeout_s
        delay = 0.01
        try:
            while True:
                with con.cursor() as cur:
                    cur.execute(TRY_LOCK_SQL, {"key": self.key})
                    if cur.fetchone()[0]:
                        self._con = con
                        return self
                if time.monotonic() + delay > deadline:
                    raise LockTimeout(
                        f"the lake lock {self.name!r} stayed held by another run for"
                        f" {self.timeout_s:g} s"
                    )
                time.sleep(delay)
                delay = min(delay * 2, MAX_POLL_S)
        except BaseException:
            con.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        con, self._con = self._con, None
        if con is None:
            return
        try:
            with con.cursor() as cur:
                cur.execute(UNLOCK_SQL, {"key": self.key})
        finally:
            con.close()  # releases the lock even if the unlock statement failed
