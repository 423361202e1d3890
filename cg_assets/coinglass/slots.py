"""The request schedule of an API key, shared by every process that uses the key.

Each Dagster run is its own process, and a deployment runs them on several nodes, so a limiter
held in one process's memory lets N parallel backfills send N times the plan's rate. The
schedule therefore lives in a database every run reaches: the next free slot per key, taken by
one atomic statement (`take`), and pushed out by a 429 or by the server's usage headers
(`push`, which also bumps a generation so callers already asleep on an older slot take a new
one). Slots are wall-clock seconds, since processes on different nodes share no monotonic
clock.

Why our own table rather than pyrate-limiter's SQLite/PostgreSQL buckets (read in 4.5.1):

- Shape. Its buckets log one row per request and admit while the count in the window is under
  the limit, so each window opens with a burst of up to the whole budget and then stalls. The
  budget is met, but the key then has no room left in the window for anyone else using it (a
  heads-up run, the sidecar's order refills), and a run started during the stall waits up to a
  minute for its first request. Evenly spaced slots keep every run moving and leave the margin
  (`safety`) free at all times; here that is one row per key and one statement per request,
  with no log to prune (its buckets need a leaker thread deleting old rows).
- The server's word. A 429 or usage headers saying others use the key must push every
  process's next request out (`push`, and the generation that wakes sleepers on old slots).
  Its buckets count our own requests only; the nearest thing, filling a bucket, blocks at most
  one window and whoever fills it first.
- Contention. Its PostgreSQL bucket takes `LOCK TABLE ... NOWAIT` and, when another process
  holds the lock, refuses the request as if the window were full, so four busy runs mostly
  retry after sleeps; its SQLite bucket is safe across processes only with an optional
  `filelock`, which its own code notes is per thread. One `INSERT ... ON CONFLICT DO UPDATE
  ... RETURNING` serialises on the key's row in both databases, without refusals.
- Dependencies. Its PostgreSQL bucket needs psycopg 3 and psycopg_pool; dagster-postgres
  already brings psycopg2, which this uses.

`SqliteSlots` serves one machine (its file lives in CG_DATA_DIR); `PostgresSlots` serves a
deployment whose runs start on any node (CG_STATE_DSN). `slot_store` picks one from a
location. `cg_assets_tests/test_market/test_parallel_backfills.py` runs four backfills at once
on each and measures the busiest 60 s window against the plan.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from cg_assets.state_location import dsn_ident, is_postgres_dsn

TAKE_SQL = """
INSERT INTO cg_rate_schedule (key, next_slot, generation)
VALUES (:key, :now + :spacing, 0)
ON CONFLICT (key) DO UPDATE
SET next_slot = max(cg_rate_schedule.next_slot, :now) + :spacing
RETURNING next_slot - :spacing, generation
"""

PUSH_SQL = """
INSERT INTO cg_rate_schedule (key, next_slot, generation)
VALUES (:key, :not_before, 1)
ON CONFLICT (key) DO UPDATE
SET next_slot = :not_before, generation = cg_rate_schedule.generation + 1
WHERE cg_rate_schedule.next_slot < :not_before
"""

GENERATION_SQL = "SELECT generation FROM cg_rate_schedule WHERE key = :key"

# The same statements in PostgreSQL's dialect (GREATEST, %(name)s parameters).
PG_TAKE_SQL = """
INSERT INTO cg_rate_schedule (key, next_slot, generation)
VALUES (%(key)s, %(now)s + %(spacing)s, 0)
ON CONFLICT (key) DO UPDATE
SET next_slot = GREATEST(cg_rate_schedule.next_slot, %(now)s) + %(spacing)s
RETURNING next_slot - %(spacing)s, generation
"""

PG_PUSH_SQL = """
INSERT INTO cg_rate_schedule (key, next_slot, generation)
VALUES (%(key)s, %(not_before)s, 1)
ON CONFLICT (key) DO UPDATE
SET next_slot = %(not_before)s, generation = cg_rate_schedule.generation + 1
WHERE cg_rate_schedule.next_slot < %(not_before)s
"""

PG_GENERATION_SQL = "SELECT generation FROM cg_rate_schedule WHERE key = %(key)s"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS cg_rate_schedule (
    key TEXT PRIMARY KEY,
    next_slot DOUBLE PRECISION NOT NULL,
    generation BIGINT NOT NULL
)
"""


class SlotStore(Protocol):
    ident: str  # which schedule this is, e.g. "sqlite:/data/rate_schedule.sqlite"

    def take(self, key: str, spacing_s: float, now: float) -> tuple[float, int]:
        """Reserve the key's next slot at or after `now`: (slot time, schedule generation)."""
        ...

    def push(self, key: str, not_before: float) -> None:
        """No slot of the key before `not_before` (a later push wins; earlier ones are no-ops)."""
        ...

    def generation(self, key: str) -> int:
        """Bumped by every effective push: a sleeper on an older generation must re-take."""
        ...


class SqliteSlots:
    """The schedule in a SQLite file: every process of one machine shares it."""

    def __init__(self, path: Path | str, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path).resolve()
        self.ident = f"sqlite:{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        with self._connect() as con:
            con.execute(SCHEMA_SQL)

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            self._local.con = con
        return con

    def take(self, key: str, spacing_s: float, now: float) -> tuple[float, int]:
        con = self._connect()
        row = con.execute(TAKE_SQL, {"key": key, "now": now, "spacing": spacing_s}).fetchone()
        return float(row[0]), int(row[1])

    def push(self, key: str, not_before: float) -> None:
        self._connect().execute(PUSH_SQL, {"key": key, "not_before": not_before})

    def generation(self, key: str) -> int:
        row = self._connect().execute(GENERATION_SQL, {"key": key}).fetchone()
        return int(row[0]) if row else 0


class PostgresSlots:
    """The schedule in PostgreSQL: every process on every node of a deployment shares it."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.ident = dsn_ident(dsn)  # the DSN may carry a password
        self._local = threading.local()
        self._execute(SCHEMA_SQL, {})

    def _execute(self, sql: str, params: dict[str, object]) -> tuple | None:
        import psycopg2

        con = getattr(self._local, "con", None)
        if con is None or con.closed:
            con = self._local.con = psycopg2.connect(self._dsn)
            con.autocommit = True
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone() if cur.description else None

    def take(self, key: str, spacing_s: float, now: float) -> tuple[float, int]:
        row = self._execute(PG_TAKE_SQL, {"key": key, "now": now, "spacing": spacing_s})
        if row is None:
            raise RuntimeError("the schedule upsert returned no row")
        return float(row[0]), int(row[1])

    def push(self, key: str, not_before: float) -> None:
        self._execute(PG_PUSH_SQL, {"key": key, "not_before": not_before})

    def generation(self, key: str) -> int:
        row = self._execute(PG_GENERATION_SQL, {"key": key})
        return int(row[0]) if row else 0


def slot_store(location: str) -> SlotStore:
    """A `postgresql://` DSN, or the path of a SQLite file."""
    if is_postgres_dsn(location):
        return PostgresSlots(location)
    return SqliteSlots(location)
