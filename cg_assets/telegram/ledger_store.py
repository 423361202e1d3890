"""Where the alert ledger keeps its rows: a SQLite file on one machine, PostgreSQL in a
deployment whose runs start on any node. The schema both create, and what differs between
them, lives here.

`AlertLedger` (in `ledger`) holds every rule and every statement, written once in the common
subset of both dialects with `:name` parameters; a store only runs them. What a store adds:

- a write transaction that serialises every writer of the ledger from its first read, which a
  claim needs because its hold-back rules read other alerts' rows: SQLite's `BEGIN IMMEDIATE`
  (the database's write lock), PostgreSQL's transaction-scoped advisory lock
  (`pg_advisory_xact_lock`, released by commit, rollback or a dropped connection, so a run
  killed mid-transaction cannot keep it). Waiting for it is bounded by `busy_timeout_s` on
  both; alerts are few, so one writer at a time costs nothing;
- creating the tables (and, for SQLite, migrating a ledger from before claims had owners: no
  PostgreSQL ledger predates them);
- the parameter style (psycopg2 takes `%(name)s`).

Each call opens its own short-lived connection, so a ledger can be shared by the threads of a
run and nothing stays open between calls; a `kill -9` drops it with its transaction.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from cg_assets.state_location import dsn_ident, is_postgres_dsn

SCHEMA_VERSION = 1

# DOUBLE PRECISION and BIGINT: PostgreSQL's REAL is 4 bytes (epoch seconds would lose minutes);
# SQLite gives both names the same affinity as REAL and INTEGER.
ALERTS_TABLE = """
CREATE TABLE {name} (
    key         TEXT PRIMARY KEY,
    coin        TEXT NOT NULL,
    rules       TEXT NOT NULL,            -- comma-separated rule ids the message carries
    level       TEXT NOT NULL,            -- the highest of their levels
    chat_id     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN
                    ('pending', 'sending', 'sent', 'failed', 'unknown', 'suppressed')),
    error       TEXT NOT NULL DEFAULT '', -- why it was not sent (failed, unknown, suppressed)
    note        TEXT NOT NULL DEFAULT '', -- how it was sent (retries, ambiguous timeouts)
    message_id  BIGINT,                   -- Telegram's id of the (first) message
    reply_to    BIGINT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    text        TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL, -- epoch seconds
    claimed_at  DOUBLE PRECISION,         -- when it last became pending
    updated_at  DOUBLE PRECISION NOT NULL,
    owner       TEXT,                     -- the token of the claim that owns a pending/sending row
    owner_host  TEXT,                     -- where that claim's pid means something (`pid_scope`)
    owner_pid   INTEGER,
    lease_until DOUBLE PRECISION,         -- after this, a pending/sending row is taken back
    unconfirmed INTEGER NOT NULL DEFAULT 0 -- sends whose delivery is unknown
)
"""
SCHEMA = (
    ALERTS_TABLE.format(name="IF NOT EXISTS alerts"),
    """
    CREATE TABLE IF NOT EXISTS alert_signals (
        key    TEXT NOT NULL REFERENCES alerts (key) ON DELETE CASCADE,
        coin   TEXT NOT NULL,
        rule   TEXT NOT NULL,
        level  TEXT NOT NULL,
        PRIMARY KEY (key, rule)
    )
    """,
    "CREATE INDEX IF NOT EXISTS alert_signals_by_rule ON alert_signals (coin, rule)",
    "CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, claimed_at)",
    # `records(since=)`: the daily cap and the heartbeat read a day of a year's ledger.
    "CREATE INDEX IF NOT EXISTS alerts_by_created ON alerts (created_at)",
)

# SQLite version 0 (before claims had owners) -> 1. Its `pending` rows may have been mid-send,
# and its `failed` rows "abandoned while sending" were of unknown delivery: both say so now.
MIGRATE_V0_SQL = """
INSERT INTO alerts_v1 (key, coin, rules, level, chat_id, status, error, note, message_id,
                       reply_to, attempts, text, created_at, claimed_at, updated_at,
                       lease_until, unconfirmed)
SELECT key, coin, rules, level, chat_id,
       CASE WHEN status = 'pending' THEN 'sending'
            WHEN status = 'failed' AND error LIKE 'abandoned while sending%' THEN 'unknown'
            ELSE status END,
       error, note, message_id, reply_to, attempts, text, created_at, claimed_at, updated_at,
       CASE WHEN status = 'pending' THEN claimed_at + :lease_s END,
       CASE WHEN status = 'failed' AND error LIKE 'abandoned while sending%' THEN 1 ELSE 0 END
FROM alerts
"""

# Any constant of our own: the key of the advisory lock that serialises the ledger's writers.
PG_LOCK_KEY = 0x63_67_61_6C  # "cgal"

Row = Mapping[str, Any]


class Tx(Protocol):
    """Statements of one connection, with `:name` parameters."""

    def rows(self, sql: str, params: Mapping[str, object]) -> list[Row]: ...

    def run(self, sql: str, params: Mapping[str, object]) -> int:
        """Execute; the number of rows it changed."""
        ...


class LedgerStore(Protocol):
    ident: str  # which ledger this is, never with a password: "sqlite:/data/...", "postgresql:.."

    def write(self) -> AbstractContextManager[Tx]:
        """A transaction that holds the ledger's write lock from its first statement; commits
        when the block ends, rolls back when it raises."""
        ...

    def read(self) -> AbstractContextManager[Tx]: ...


class SqliteTx:
    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def rows(self, sql: str, params: Mapping[str, object]) -> list[Row]:
        return self.con.execute(sql, params).fetchall()

    def run(self, sql: str, params: Mapping[str, object]) -> int:
        return self.con.execute(sql, params).rowcount


class SqliteLedgerStore:
    """The ledger in a SQLite file in WAL mode: short cross-process write transactions with a
    busy timeout, `synchronous=FULL` so each step is durable before the next one happens."""

    def __init__(self, path: Path | str, lease_s: float, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.ident = f"sqlite:{self.path}"
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create(lease_s)

    def _create(self, lease_s: float) -> None:
        """Create the tables, or bring an older ledger up to `SCHEMA_VERSION`."""
        # Foreign keys stay off: replacing `alerts` must not cascade into `alert_signals`.
        with self._connect(foreign_keys=False) as con:
            con.execute("PRAGMA journal_mode = WAL")
            with self._transaction(con):
                version = con.execute("PRAGMA user_version").fetchone()[0]
                exists = con.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
                ).fetchone()[0]
                if exists and version < 1:
                    con.execute(ALERTS_TABLE.format(name="alerts_v1"))
                    con.execute(MIGRATE_V0_SQL, {"lease_s": lease_s})
                    con.execute("DROP TABLE alerts")
                    con.execute("ALTER TABLE alerts_v1 RENAME TO alerts")
                for statement in SCHEMA:
                    con.execute(statement)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            con.execute("PRAGMA synchronous = FULL")
            yield con
        finally:
            con.close()

    @staticmethod
    @contextmanager
    def _transaction(con: sqlite3.Connection) -> Iterator[None]:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._connect() as con, self._transaction(con):
            yield SqliteTx(con)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self._connect() as con:
            yield SqliteTx(con)


# A string literal (kept as it is), or a `:name` parameter that is not half of a `::` cast.
_LITERAL_OR_PARAMETER = re.compile(r"'[^']*'|(?<![:\w]):(\w+)")


@cache
def pg_sql(sql: str) -> str:
    """A statement with `:name` parameters in psycopg2's style, `%(name)s`; every `%` of the
    statement itself doubled, as psycopg2 reads them all."""
    return _LITERAL_OR_PARAMETER.sub(
        lambda m: m.group(0) if m.group(1) is None else f"%({m.group(1)})s",
        sql.replace("%", "%%"),
    )


class PostgresTx:
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def rows(self, sql: str, params: Mapping[str, object]) -> list[Row]:
        self.cur.execute(pg_sql(sql), params)
        return self.cur.fetchall()

    def run(self, sql: str, params: Mapping[str, object]) -> int:
        self.cur.execute(pg_sql(sql), params)
        return self.cur.rowcount


class PostgresLedgerStore:
    """The ledger in PostgreSQL (psycopg2, which dagster-postgres installs)."""

    def __init__(self, dsn: str, busy_timeout_s: float = 30.0) -> None:
        self._dsn = dsn
        self.ident = dsn_ident(dsn)
        self.busy_timeout_s = busy_timeout_s
        with self.write() as tx:  # the lock also serialises racing CREATE ... IF NOT EXISTS
            for statement in SCHEMA:
                tx.run(statement, {})

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        import psycopg2
        import psycopg2.extras

        con = psycopg2.connect(
            self._dsn,
            connect_timeout=max(1, round(self.busy_timeout_s)),
            cursor_factory=psycopg2.extras.RealDictCursor,
        )
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._connect() as con:
            try:
                with con.cursor() as cur:
                    cur.execute(
                        "SET LOCAL lock_timeout = %(ms)s", {"ms": int(self.busy_timeout_s * 1000)}
                    )
                    cur.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": PG_LOCK_KEY})
                    yield PostgresTx(cur)
            except BaseException:
                con.rollback()
                raise
            con.commit()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self._connect() as con:
            con.autocommit = True
            with con.cursor() as cur:
                yield PostgresTx(cur)


def ledger_store(location: Path | str, lease_s: float, busy_timeout_s: float = 30.0) -> LedgerStore:
    """A `postgresql://` DSN, or the path of a SQLite file."""
    if is_postgres_dsn(str(location)):
        return PostgresLedgerStore(str(location), busy_timeout_s)
    return SqliteLedgerStore(location, lease_s, busy_timeout_s)
