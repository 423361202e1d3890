"""The alert ledger: every alert ever decided, and the one place that decides whether to send.

Alerts are sent from separate processes that may run at the same time (the hourly
`telegram_alerts` run, a heads-up run launched by the liquidation sensor, a manual re-run), so
"has this gone out already?" must be answered and acted on atomically across processes. The
ledger is a small SQLite database under `CG_DATA_DIR/alerts/` rather than a table in the DuckDB
catalog: DuckDB lets one process hold a database file for writing (a user's open session
would block alerts), while SQLite in WAL mode gives short cross-process write transactions
with a busy timeout. A claim runs in one `BEGIN IMMEDIATE` transaction, which takes the write
lock before reading, so two runs deciding about the same alert are serialised: the second
sees the first's `pending` row and stands back. `synchronous=FULL` makes each decision
durable before the message is sent.

Life of an alert (`key` is the caller's idempotency key, e.g. one coin's digest for one bar):
claim -> `pending` (written before sending) -> `sent` with the Telegram message_id, or
`failed` with an error naming the setting to fix. Alerts never attempted are `suppressed`
with the reason (kill switch, no token, stale inputs, dedup or cooldown). Only `pending` and
`sent` rows hold back later alerts; `failed` and `suppressed` ones can be claimed again under
the same key, so fixing a setting and re-running sends what was missed.

Hold-back rules per (coin, rule): nothing within `dedup_s` of an earlier alert of the rule (any
level), and nothing within the cooldown of its level after an earlier alert of the rule at the
same or a higher level; a rule that escalates (MEDIUM, then HIGH) is sent once the dedup window
has passed. Cooldowns end `slack_s` early, so an hourly evaluation is not held back by a
60-minute cooldown just because its run started a few seconds earlier than the previous one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["pending", "sent", "failed", "suppressed"]
LEVELS = ("LOW", "MEDIUM", "HIGH")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
HOLDING = ("pending", "sent")  # statuses that hold back later alerts

DEFAULT_COOLDOWNS = {"HIGH": 30 * 60.0, "MEDIUM": 60 * 60.0, "LOW": 6 * 3600.0}

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key         TEXT PRIMARY KEY,
    coin        TEXT NOT NULL,
    rules       TEXT NOT NULL,            -- comma-separated rule ids the message carries
    level       TEXT NOT NULL,            -- the highest of their levels
    chat_id     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'suppressed')),
    error       TEXT NOT NULL DEFAULT '', -- why it was not sent (failed, suppressed)
    note        TEXT NOT NULL DEFAULT '', -- how it was sent (retries, ambiguous timeouts)
    message_id  INTEGER,                  -- Telegram's id of the (first) message
    reply_to    INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    text        TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,            -- epoch seconds; datetime(created_at, 'unixepoch')
    claimed_at  REAL,                     -- when it last became pending
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_signals (
    key    TEXT NOT NULL REFERENCES alerts (key) ON DELETE CASCADE,
    coin   TEXT NOT NULL,
    rule   TEXT NOT NULL,
    level  TEXT NOT NULL,
    PRIMARY KEY (key, rule)
);
CREATE INDEX IF NOT EXISTS alert_signals_by_rule ON alert_signals (coin, rule);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, claimed_at);
"""

# Earlier alerts of one rule that can still hold a new one back.
PRIOR_SQL = """
SELECT s.level, a.claimed_at
FROM alert_signals s JOIN alerts a ON a.key = s.key
WHERE s.coin = :coin AND s.rule = :rule AND a.key <> :key
  AND a.status IN ('pending', 'sent') AND a.claimed_at > :since
"""

ABANDON_SQL = """
UPDATE alerts SET status = 'failed', updated_at = :now,
    error = 'abandoned while sending: the run stopped before Telegram answered;'
            || ' delivery unknown'
WHERE status = 'pending' AND claimed_at < :before
"""


@dataclass(frozen=True)
class Policy:
    """De-duplication and cooldowns, in seconds; see the module docstring for the rules.

    `lease_s`: a `pending` row older than this belongs to a run that died while sending; the
    next claim marks it failed (delivery unknown) so it stops holding alerts back forever.
    """

    dedup_s: float = 300.0
    cooldown_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_COOLDOWNS))
    slack_s: float = 60.0
    lease_s: float = 600.0

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)!r}: must be >= 0"
            for name in ("dedup_s", "slack_s")
            if not getattr(self, name) >= 0
        ]
        if not self.lease_s > 0:
            problems.append(f"lease_s={self.lease_s!r}: must be > 0")
        if set(self.cooldown_s) != set(LEVELS):
            problems.append(f"cooldown_s={dict(self.cooldown_s)!r}: needs exactly {LEVELS}")
        problems += [
            f"cooldown_s[{level}]={value!r}: must be >= 0"
            for level, value in self.cooldown_s.items()
            if not value >= 0
        ]
        if problems:
            raise ValueError("invalid alert policy: " + "; ".join(problems))

    @property
    def horizon_s(self) -> float:
        """How far back an earlier alert can matter."""
        return max(self.dedup_s, *self.cooldown_s.values())


@dataclass(frozen=True)
class SignalRef:
    """What the ledger needs of a signal: its rule id and level."""

    rule: str
    level: str

    def __post_init__(self) -> None:
        if self.level not in LEVEL_RANK:
            raise ValueError(f"level={self.level!r} for rule {self.rule!r}: expected {LEVELS}")
        if not self.rule or "," in self.rule:
            raise ValueError(f"rule={self.rule!r}: expected a non-empty id without commas")


@dataclass(frozen=True)
class Prior:
    """An earlier pending or sent alert of the same (coin, rule)."""

    level: str
    at: float


def hold_back(signal: SignalRef, earlier: Sequence[Prior], now: float, policy: Policy) -> str:
    """Why `signal` must not be sent at `now` given earlier alerts of its rule ('' = send)."""
    for prior in sorted(earlier, key=lambda p: -p.at):
        age = now - prior.at
        if age < policy.dedup_s:
            return (
                f"{signal.rule}: duplicate, alerted {_minutes(age)} ago"
                f" (dedup {_minutes(policy.dedup_s)})"
            )
        cooldown = policy.cooldown_s[signal.level]
        if LEVEL_RANK[prior.level] >= LEVEL_RANK[signal.level] and age < cooldown - policy.slack_s:
            return (
                f"{signal.rule}: cooldown, {prior.level} alerted {_minutes(age)} ago"
                f" ({signal.level} cooldown {_minutes(cooldown)})"
            )
    return ""


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


@dataclass(frozen=True)
class AlertRecord:
    key: str
    coin: str
    rules: tuple[str, ...]
    level: str
    chat_id: str
    status: Status
    error: str
    note: str
    message_id: int | None
    reply_to: int | None
    attempts: int
    text: str
    created_at: float
    claimed_at: float | None
    updated_at: float


@dataclass(frozen=True)
class Claim:
    """The outcome of `AlertLedger.claim`.

    granted: the caller owns the `pending` row and must send `fresh`, then report the result.
    Otherwise `reason` says why not, and `record` is the row as it stands (suppressed, or the
    earlier pending/sent alert under the same key).
    """

    granted: bool
    fresh: tuple[SignalRef, ...]
    held_back: tuple[tuple[SignalRef, str], ...]
    reason: str
    record: AlertRecord


def ledger_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "alerts" / "ledger.sqlite3"


class AlertLedger:
    """The ledger at `path`; safe to use from several processes at once.

    Each call opens its own short-lived connection, so an instance can be shared freely
    within a process (sensors, assets, threads) and nothing stays locked between calls.
    `clock` returns epoch seconds; tests inject one to move time instead of sleeping.
    """

    def __init__(
        self,
        path: Path | str,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or Policy()
        self.clock = clock
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA synchronous = FULL")
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the lock from its first read."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------------ deciding

    def claim(
        self,
        key: str,
        coin: str,
        signals: Sequence[SignalRef],
        chat_id: str,
        *,
        reply_to: int | None = None,
    ) -> Claim:
        """Decide atomically whether alert `key` goes out, and with which of `signals`.

        Granted when no pending/sent row has this key and at least one signal passes the
        hold-back rules; the row is then `pending` with the signals that passed. When every
        signal is held back the alert is recorded as `suppressed` with the reasons.
        """
        if not signals:
            raise ValueError(f"alert {key!r} has no signals to claim")
        now = self.clock()
        with self._write() as con:
            con.execute(ABANDON_SQL, {"now": now, "before": now - self.policy.lease_s})
            existing = _get(con, key)
            if existing is not None and existing.status in HOLDING:
                why = (
                    f"already sent as message {existing.message_id}"
                    if existing.status == "sent"
                    else "being sent by another run"
                )
                return Claim(False, (), (), why, existing)
            fresh: list[SignalRef] = []
            held: list[tuple[SignalRef, str]] = []
            for signal in signals:
                earlier = [
                    Prior(row["level"], row["claimed_at"])
                    for row in con.execute(
                        PRIOR_SQL,
                        {
                            "coin": coin,
                            "rule": signal.rule,
                            "key": key,
                            "since": now - self.policy.horizon_s,
                        },
                    )
                ]
                why = hold_back(signal, earlier, now, self.policy)
                if why:
                    held.append((signal, why))
                else:
                    fresh.append(signal)
            if not fresh:
                reason = "suppressed: " + "; ".join(why for _, why in held)
                record = _upsert(
                    con, key, coin, signals, chat_id, "suppressed", reason, now, reply_to
                )
                return Claim(False, (), tuple(held), reason, record)
            record = _upsert(con, key, coin, fresh, chat_id, "pending", "", now, reply_to)
            return Claim(True, tuple(fresh), tuple(held), "", record)

    def suppress(
        self,
        key: str,
        coin: str,
        signals: Sequence[SignalRef],
        chat_id: str,
        reason: str,
        text: str = "",
    ) -> AlertRecord:
        """Record an alert that is not attempted (kill switch, no token, stale inputs).

        A pending or sent alert under the same key is left as it is and returned.
        """
        now = self.clock()
        with self._write() as con:
            existing = _get(con, key)
            if existing is not None and existing.status in HOLDING:
                return existing
            record = _upsert(con, key, coin, signals, chat_id, "suppressed", reason, now, None)
            if text:
                _update(con, key, now, text=text)
                record = _get(con, key)
            assert record is not None
            return record

    # ------------------------------------------------------------------ reporting back

    def set_text(self, key: str, text: str) -> None:
        with self._write() as con:
            _update(con, key, self.clock(), text=text)

    def mark_sent(self, key: str, message_id: int, attempts: int, note: str = "") -> None:
        with self._write() as con:
            _update(
                con,
                key,
                self.clock(),
                status="sent",
                message_id=message_id,
                attempts=attempts,
                note=note,
                error="",
            )

    def mark_failed(
        self, key: str, error: str, attempts: int, message_id: int | None = None
    ) -> None:
        """`message_id` is set when part of a split message went out before the failure."""
        with self._write() as con:
            _update(
                con,
                key,
                self.clock(),
                status="failed",
                error=error,
                attempts=attempts,
                message_id=message_id,
            )

    # ------------------------------------------------------------------ reading

    def get(self, key: str) -> AlertRecord | None:
        with self._connect() as con:
            return _get(con, key)

    def records(self, coin: str | None = None, status: Status | None = None) -> list[AlertRecord]:
        """Alerts oldest first, optionally of one coin and/or one status."""
        sql = "SELECT * FROM alerts WHERE coalesce(:coin, coin) = coin"
        sql += " AND coalesce(:status, status) = status ORDER BY created_at, key"
        with self._connect() as con:
            rows = con.execute(sql, {"coin": coin, "status": status}).fetchall()
        return [_record(row) for row in rows]


def _record(row: sqlite3.Row) -> AlertRecord:
    return AlertRecord(
        key=row["key"],
        coin=row["coin"],
        rules=tuple(filter(None, row["rules"].split(","))),
        level=row["level"],
        chat_id=row["chat_id"],
        status=row["status"],
        error=row["error"],
        note=row["note"],
        message_id=row["message_id"],
        reply_to=row["reply_to"],
        attempts=row["attempts"],
        text=row["text"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        updated_at=row["updated_at"],
    )


def _get(con: sqlite3.Connection, key: str) -> AlertRecord | None:
    row = con.execute("SELECT * FROM alerts WHERE key = ?", (key,)).fetchone()
    return None if row is None else _record(row)


def _upsert(
    con: sqlite3.Connection,
    key: str,
    coin: str,
    signals: Sequence[SignalRef],
    chat_id: str,
    status: Status,
    error: str,
    now: float,
    reply_to: int | None,
) -> AlertRecord:
    """Insert or overwrite the row of `key` (never called over a pending or sent row)."""
    level = max((s.level for s in signals), key=LEVEL_RANK.__getitem__)
    con.execute(
        """
        INSERT INTO alerts (key, coin, rules, level, chat_id, status, error, reply_to,
                            created_at, claimed_at, updated_at)
        VALUES (:key, :coin, :rules, :level, :chat_id, :status, :error, :reply_to,
                :now, :claimed_at, :now)
        ON CONFLICT (key) DO UPDATE SET
            coin = excluded.coin, rules = excluded.rules, level = excluded.level,
            chat_id = excluded.chat_id, status = excluded.status, error = excluded.error,
            note = '', message_id = NULL, text = '', reply_to = excluded.reply_to,
            claimed_at = excluded.claimed_at, updated_at = excluded.updated_at
        """,
        {
            "key": key,
            "coin": coin,
            "rules": ",".join(s.rule for s in signals),
            "level": level,
            "chat_id": str(chat_id),
            "status": status,
            "error": error,
            "reply_to": reply_to,
            "now": now,
            "claimed_at": now if status == "pending" else None,
        },
    )
    con.execute("DELETE FROM alert_signals WHERE key = ?", (key,))
    con.executemany(
        "INSERT INTO alert_signals (key, coin, rule, level) VALUES (?, ?, ?, ?)",
        [(key, coin, s.rule, s.level) for s in signals],
    )
    record = _get(con, key)
    assert record is not None
    return record


def _update(con: sqlite3.Connection, key: str, now: float, **values: object) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    cursor = con.execute(
        f"UPDATE alerts SET {assignments}, updated_at = :now WHERE key = :key",
        {**values, "now": now, "key": key},
    )
    if cursor.rowcount != 1:
        raise KeyError(f"no alert with key {key!r} in the ledger")
