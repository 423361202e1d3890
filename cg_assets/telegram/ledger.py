"""The alert ledger: every alert ever decided, and the one place that decides whether to send.

Alerts are sent from separate processes that may run at the same time (the hourly
`telegram_alerts` run, a heads-up run launched by the liquidation sensor, a manual re-run), so
"has this gone out already?" must be answered and acted on atomically across processes, and
in a deployment across nodes. The ledger is therefore a small database of its own rather than a
table in the DuckDB catalog (DuckDB lets one process hold a database file for writing, so a
user's open session would block alerts): a SQLite file under `CG_DATA_DIR/alerts/` on one
machine, or PostgreSQL when `CG_STATE_DSN` names one (`ledger_store` holds what differs; every
rule and statement here serves both). A claim runs in one write transaction that holds the
ledger's write lock before it reads, so two runs deciding about the same alert are serialised:
the second sees the first's claim and stands back. Each step is committed durably before the
next one happens, so a process killed at any point leaves a row that says how far it got.

Life of an alert (`key` is the caller's idempotency key, e.g. one coin's digest for one bar):
claim -> `pending` (owned by the claim's token, nothing sent yet) -> `sending` (written just
before the first request to Telegram) -> `sent` with the Telegram message_id; or `failed`
(nothing of this attempt reached the chat: Telegram refused, the run was interrupted before
sending, a bug) or `unknown` (a request may have reached the chat but no answer came: the run
died or was interrupted while sending, or Telegram's answer timed out). Alerts never attempted
are `suppressed` with the reason (kill switch, no token, stale inputs, dedup or cooldown).

Crashes. Every mark names the claim's token and is refused when the row no longer belongs to
it, so a run that lost its claim can neither send (the `sending` mark comes first) nor
overwrite what the run that took over recorded. A `pending` or `sending` row is taken back
when its lease (`Policy.lease_s`, renewed by the `sending` mark) has expired, or at once when
its owner's process is gone (a `kill -9`): `pending` becomes `failed` (nothing was sent),
`sending` becomes `unknown`. Interrupts are released by the caller (`delivery.deliver`) the
same way, without waiting for the lease.

Across nodes a pid says nothing: the process check applies only to an owner in the same pid
scope (`pid_scope`: host, kernel boot and PID namespace), so a claim made in another container
or on another node is taken back by its lease alone, never because an unrelated pid is free
here. Leases compare each node's wall clock with the one that wrote them, so nodes need their
clocks synchronised (NTP) to well within `lease_s` (10 minutes).

At least once, at most one repeat. `failed` and `unknown` alerts can be claimed again under
the same key, and `undelivered` lists them so the next evaluation sends what it owes. Each row
counts `unconfirmed`: the sends whose delivery is unknown. A claim of a row with one is
granted as a `repeat`, which the message flags as a possible repeat; a row with two is never
sent again, so no alert reaches the chat more than twice. Such a row also counts as sent for
the hold-back rules, like `pending`, `sending` and `sent` rows; `failed` and `suppressed`
ones with nothing unconfirmed hold nothing back.

Hold-back rules per (coin, rule): nothing within `dedup_s` of an earlier alert of the rule (any
level), and nothing within the cooldown of its level after an earlier alert of the rule at the
same or a higher level; a rule that escalates (MEDIUM, then HIGH) is sent once the dedup window
has passed. Cooldowns end `slack_s` early, so an hourly evaluation is not held back by a
60-minute cooldown just because its run started a few seconds earlier than the previous one.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cg_assets.telegram.ledger_store import Row, Tx, ledger_store

Status = Literal["pending", "sending", "sent", "failed", "unknown", "suppressed"]
LEVELS = ("LOW", "MEDIUM", "HIGH")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
IN_FLIGHT = ("pending", "sending")  # owned by a claim
MAX_UNCONFIRMED = 2  # sends of unknown outcome after which an alert is never sent again

DEFAULT_COOLDOWNS = {"HIGH": 30 * 60.0, "MEDIUM": 60 * 60.0, "LOW": 6 * 3600.0}

# Earlier alerts of one rule that can still hold a new one back: in flight, sent, or possibly
# delivered.
PRIOR_SQL = """
SELECT s.level, a.claimed_at
FROM alert_signals s JOIN alerts a ON a.key = s.key
WHERE s.coin = :coin AND s.rule = :rule AND a.key <> :key
  AND (a.status IN ('pending', 'sending', 'sent', 'unknown') OR a.unconfirmed > 0)
  AND a.claimed_at > :since
"""

IN_FLIGHT_SQL = """
SELECT key, status, owner_host, owner_pid, lease_until
FROM alerts WHERE status IN ('pending', 'sending')
"""

# A claim whose owner is gone: nothing was sent yet (pending), or delivery is unknown (sending).
ABANDON_SQL = """
UPDATE alerts SET
    status = CASE status WHEN 'pending' THEN 'failed' ELSE 'unknown' END,
    unconfirmed = unconfirmed + CASE status WHEN 'sending' THEN 1 ELSE 0 END,
    error = CASE status
        WHEN 'pending' THEN 'abandoned before sending (' || :why || '): not delivered'
        ELSE 'abandoned while sending (' || :why || '): delivery unknown' END,
    owner = NULL, lease_until = NULL, updated_at = :now
WHERE key = :key AND status IN ('pending', 'sending')
"""

# Never over a claimed or sent row; what is known of earlier sends (`unconfirmed`,
# `attempts`) stays.
UPSERT_SQL = """
INSERT INTO alerts (key, coin, rules, level, chat_id, status, error, reply_to,
                    created_at, claimed_at, updated_at)
VALUES (:key, :coin, :rules, :level, :chat_id, :status, :error, :reply_to,
        :now, :claimed_at, :now)
ON CONFLICT (key) DO UPDATE SET
    coin = excluded.coin, rules = excluded.rules, level = excluded.level,
    chat_id = excluded.chat_id, status = excluded.status, error = excluded.error,
    note = '', message_id = NULL, text = '', reply_to = excluded.reply_to,
    claimed_at = coalesce(excluded.claimed_at, alerts.claimed_at),
    updated_at = excluded.updated_at,
    owner = NULL, owner_host = NULL, owner_pid = NULL, lease_until = NULL
"""

RECORDS_SQL = """
SELECT * FROM alerts
WHERE coalesce(:coin, coin) = coin AND coalesce(:status, status) = status
  AND created_at >= coalesce(:since, 0)
ORDER BY created_at, key
"""

UNDELIVERED_SQL = """
SELECT * FROM alerts
WHERE substr(key, 1, length(:prefix)) = :prefix AND created_at >= :since
  AND status IN ('failed', 'unknown') AND unconfirmed < :max_unconfirmed
ORDER BY created_at, key
"""


@dataclass(frozen=True)
class Policy:
    """De-duplication and cooldowns, in seconds; see the module docstring for the rules.

    `lease_s`: how long a claim may stay `pending` or `sending` before another run takes it
    back; longer than any send (retries and flood-control waits included) can take.
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
    unconfirmed: int


@dataclass(frozen=True)
class Claim:
    """The outcome of `AlertLedger.claim`.

    granted: the caller owns the `pending` row (through `token`, which every mark names) and
    must send `fresh`, then report the result. `repeat`: an earlier send of this alert may have
    reached the chat, so the message must say it may be a repeat, and a send of unknown outcome
    must not be retried. Otherwise `reason` says why not, and `record` is the row as it stands
    (suppressed, or the earlier pending/sent alert under the same key).
    """

    granted: bool
    fresh: tuple[SignalRef, ...]
    held_back: tuple[tuple[SignalRef, str], ...]
    reason: str
    record: AlertRecord
    token: str = ""
    repeat: bool = False

    @property
    def key(self) -> str:
        return self.record.key


def ledger_path(data_dir: Path | str) -> Path:
    """The SQLite ledger of one machine (when no CG_STATE_DSN is configured)."""
    return Path(data_dir) / "alerts" / "ledger.sqlite3"


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs (a zombie does not): a claim of a
    process that is gone is taken back without waiting for its lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc, or it exited just now: leave it to the lease
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_scope() -> str:
    """Where this process's pid names this process: the host, its kernel boot and its PID
    namespace. A hostname alone is not enough: containers (a Docker run launcher, pods) may
    share one while each numbers its processes from 1, so another container's live owner would
    look dead here. Without /proc (not Linux) the host alone stands for both."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()} boot {boot} pidns {namespace}"


class AlertLedger:
    """The ledger at `location` (a SQLite file path or a `postgresql://` DSN, see
    `ledger_store`); safe to use from several processes, on several nodes with PostgreSQL.

    Each call opens its own short-lived connection, so an instance can be shared freely
    within a process (sensors, assets, threads) and nothing stays locked between calls.
    `clock` returns epoch seconds; tests inject one to move time instead of sleeping.
    """

    def __init__(
        self,
        location: Path | str,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.policy = policy or Policy()
        self.clock = clock
        self.scope = pid_scope()
        self.store = ledger_store(location, self.policy.lease_s, busy_timeout_s)

    @property
    def ident(self) -> str:
        """Which ledger this is, for logs: never a password."""
        return self.store.ident

    def _take_back_abandoned(self, tx: Tx, now: float) -> None:
        """Release the claims of runs that are gone: lease expired, or a dead process whose pid
        means something here (see `pid_scope`); a claim from another node waits for its
        lease."""
        for row in tx.rows(IN_FLIGHT_SQL, {}):
            if row["lease_until"] is None or row["lease_until"] < now:
                why = "its lease expired"
            elif row["owner_host"] == self.scope and not process_alive(row["owner_pid"]):
                why = f"its process {row['owner_pid']} is gone"
            else:
                continue
            tx.run(ABANDON_SQL, {"key": row["key"], "why": why, "now": now})

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

        Granted when no live claim or sent row has this key, it has not reached
        `MAX_UNCONFIRMED`, and at least one signal passes the hold-back rules; the row is then
        `pending` with the signals that passed, owned by the returned token. When every signal
        is held back the alert is recorded as `suppressed` with the reasons.
        """
        if not signals:
            raise ValueError(f"alert {key!r} has no signals to claim")
        now = self.clock()
        with self.store.write() as tx:
            self._take_back_abandoned(tx, now)
            existing = _get(tx, key)
            if existing is not None:
                why = _not_again(existing)
                if why:
                    return Claim(False, (), (), why, existing)
            fresh: list[SignalRef] = []
            held: list[tuple[SignalRef, str]] = []
            for signal in signals:
                earlier = [
                    Prior(row["level"], row["claimed_at"])
                    for row in tx.rows(
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
                    tx, key, coin, signals, chat_id, "suppressed", reason, now, reply_to
                )
                return Claim(False, (), tuple(held), reason, record)
            token = uuid.uuid4().hex
            record = _upsert(tx, key, coin, fresh, chat_id, "pending", "", now, reply_to)
            _update(
                tx,
                key,
                now,
                owner=token,
                owner_host=self.scope,
                owner_pid=os.getpid(),
                lease_until=now + self.policy.lease_s,
            )
            repeat = record.unconfirmed > 0
            return Claim(True, tuple(fresh), tuple(held), "", record, token, repeat)

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

        A claimed or sent alert under the same key is left as it is and returned.
        """
        now = self.clock()
        with self.store.write() as tx:
            self._take_back_abandoned(tx, now)
            existing = _get(tx, key)
            if existing is not None and existing.status in (*IN_FLIGHT, "sent"):
                return existing
            record = _upsert(tx, key, coin, signals, chat_id, "suppressed", reason, now, None)
            if text:
                _update(tx, key, now, text=text)
                record = _get(tx, key)
            assert record is not None
            return record

    def undelivered(self, prefix: str, since: float) -> list[AlertRecord]:
        """Alerts under keys starting with `prefix`, first decided at or after `since`, that
        were claimed but are neither confirmed sent nor given up: what the next evaluation
        owes. Abandoned claims are taken back first."""
        now = self.clock()
        with self.store.write() as tx:
            self._take_back_abandoned(tx, now)
            rows = tx.rows(
                UNDELIVERED_SQL,
                {"prefix": prefix, "since": since, "max_unconfirmed": MAX_UNCONFIRMED},
            )
        return [_record(row) for row in rows]

    # ------------------------------------------------------------------ reporting back
    # Each mark applies only while `claim` still owns the row and returns whether it did: a
    # run whose claim was taken back (lease expired) must neither send nor overwrite.

    def mark_sending(self, claim: Claim, text: str) -> bool:
        """About to send `text`: from now on a crash leaves the delivery unknown. The lease
        restarts, so a long render does not eat into the time the send may take."""
        now = self.clock()
        with self.store.write() as tx:
            return _update_owned(
                tx,
                claim,
                ("pending",),
                now,
                status="sending",
                text=text,
                lease_until=now + self.policy.lease_s,
            )

    def mark_sent(self, claim: Claim, message_id: int, attempts: int, note: str = "") -> bool:
        with self.store.write() as tx:
            return _update_owned(
                tx,
                claim,
                ("sending",),
                self.clock(),
                status="sent",
                message_id=message_id,
                attempts=attempts,
                note=note,
                error="",
                lease_until=None,
            )

    def mark_failed(
        self,
        claim: Claim,
        error: str,
        attempts: int,
        message_id: int | None = None,
        unconfirmed: int = 0,
    ) -> bool:
        """Not delivered (as far as is known). `unconfirmed`: requests of this attempt that may
        have reached the chat without an answer; with any, the row is `unknown`, not `failed`.
        `message_id` is set when part of a split message went out before the failure."""
        with self.store.write() as tx:
            return _update_owned(
                tx,
                claim,
                IN_FLIGHT,
                self.clock(),
                status="unknown" if unconfirmed else "failed",
                error=error,
                attempts=attempts,
                message_id=message_id,
                unconfirmed_added=unconfirmed,
                lease_until=None,
            )

    # ------------------------------------------------------------------ reading

    def get(self, key: str) -> AlertRecord | None:
        with self.store.read() as tx:
            return _get(tx, key)

    def records(
        self, coin: str | None = None, status: Status | None = None, since: float | None = None
    ) -> list[AlertRecord]:
        """Alerts oldest first, optionally of one coin and/or one status, and first decided at
        or after `since` (epoch seconds), so a daily count need not read the whole history."""
        with self.store.read() as tx:
            rows = tx.rows(RECORDS_SQL, {"coin": coin, "status": status, "since": since})
        return [_record(row) for row in rows]


def _not_again(existing: AlertRecord) -> str:
    """Why the alert under an existing row's key may not be claimed now ('' = it may)."""
    if existing.status == "sent":
        return f"already sent as message {existing.message_id}"
    if existing.status in IN_FLIGHT:
        return "being sent by another run"
    if existing.unconfirmed >= MAX_UNCONFIRMED:
        return (
            f"delivery unknown after {existing.unconfirmed} sends: not sent again"
            " (at most one repeat)"
        )
    return ""


def _record(row: Row) -> AlertRecord:
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
        unconfirmed=row["unconfirmed"],
    )


def _get(tx: Tx, key: str) -> AlertRecord | None:
    rows = tx.rows("SELECT * FROM alerts WHERE key = :key", {"key": key})
    return _record(rows[0]) if rows else None


def _upsert(
    tx: Tx,
    key: str,
    coin: str,
    signals: Sequence[SignalRef],
    chat_id: str,
    status: Status,
    error: str,
    now: float,
    reply_to: int | None,
) -> AlertRecord:
    """Insert or overwrite the row of `key` (never called over a claimed or sent row); what
    is known of earlier sends (`unconfirmed`, `attempts`) stays."""
    level = max((s.level for s in signals), key=LEVEL_RANK.__getitem__)
    tx.run(
        UPSERT_SQL,
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
    tx.run("DELETE FROM alert_signals WHERE key = :key", {"key": key})
    for s in signals:
        tx.run(
            "INSERT INTO alert_signals (key, coin, rule, level)"
            " VALUES (:key, :coin, :rule, :level)",
            {"key": key, "coin": coin, "rule": s.rule, "level": s.level},
        )
    record = _get(tx, key)
    assert record is not None
    return record


def _update(tx: Tx, key: str, now: float, **values: object) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    changed = tx.run(
        f"UPDATE alerts SET {assignments}, updated_at = :now WHERE key = :key",
        {**values, "now": now, "key": key},
    )
    if changed != 1:
        raise KeyError(f"no alert with key {key!r} in the ledger")


def _update_owned(
    tx: Tx,
    claim: Claim,
    statuses: Sequence[Status],
    now: float,
    unconfirmed_added: int = 0,
    **values: object,
) -> bool:
    """Apply `values` if `claim` still owns its row in one of `statuses`; whether it did."""
    if not claim.token:
        raise ValueError(f"alert {claim.key!r}: the claim was not granted, there is no row to mark")
    assignments = "".join(f"{name} = :{name}, " for name in values)
    in_statuses, status_params = in_list("status", statuses)
    changed = tx.run(
        f"""
        UPDATE alerts SET {assignments}unconfirmed = unconfirmed + :added, updated_at = :now
        WHERE key = :key AND owner = :owner AND {in_statuses}
        """,
        {
            **values,
            **status_params,
            "added": unconfirmed_added,
            "now": now,
            "key": claim.key,
            "owner": claim.token,
        },
    )
    return changed == 1


def in_list(name: str, values: Sequence[str]) -> tuple[str, dict[str, str]]:
    """`name IN (:name0, :name1, ...)` and its parameters: a list parameter both dialects take."""
    params = {f"{name}{i}": value for i, value in enumerate(values)}
    return f"{name} IN ({', '.join(':' + p for p in params)})", params
