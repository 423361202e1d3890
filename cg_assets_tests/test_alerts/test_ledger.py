"""The ledger's decisions: de-dup, per-level cooldowns, statuses, atomic claims, owned marks,
abandoned claims taken back, and at most one repeat.

Every test of the ledger's behaviour runs on both backends (`ledger_location`: a SQLite file
and a real PostgreSQL database). Time moves through an injected clock; concurrency is real
(threads and processes on one ledger).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cg_assets.telegram.ledger import (
    AlertLedger,
    Claim,
    Policy,
    Prior,
    SignalRef,
    hold_back,
    ledger_path,
    process_alive,
)
from cg_assets.telegram.ledger_store import pg_sql
from cg_assets_tests.test_alerts.conftest import START, Clock

HIGH = SignalRef("funding", "HIGH")
MEDIUM = SignalRef("funding", "MEDIUM")
LOW = SignalRef("funding", "LOW")
POLICY = Policy()


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def ledger(ledger_location: str, clock: Clock) -> AlertLedger:
    return AlertLedger(ledger_location, clock=clock)


def claimed(ledger: AlertLedger, key: str, *signals: SignalRef, coin: str = "BTC") -> Claim:
    claim = ledger.claim(key, coin, signals, "1")
    assert claim.granted, claim.reason
    return claim


def sending(ledger: AlertLedger, key: str, *signals: SignalRef, coin: str = "BTC") -> Claim:
    claim = claimed(ledger, key, *signals, coin=coin)
    assert ledger.mark_sending(claim, f"<b>{key}</b>")
    return claim


def sent(ledger: AlertLedger, key: str, *signals: SignalRef, coin: str = "BTC") -> None:
    assert ledger.mark_sent(sending(ledger, key, *signals, coin=coin), message_id=1, attempts=1)


def at(minutes_ago: float, level: str = "HIGH") -> list[Prior]:
    return [Prior(level, START.timestamp() - minutes_ago * 60)]


# --------------------------------------------------------------------------- the pure rule


@pytest.mark.parametrize(
    ("signal", "minutes_ago", "prior_level", "held"),
    [
        (HIGH, 4.9, "LOW", "duplicate"),  # dedup: any level within 5 minutes
        (HIGH, 5.1, "LOW", ""),  # escalation passes once the dedup window is over
        (HIGH, 28.9, "HIGH", "cooldown"),  # HIGH cooldown 30 min, ends 1 min early (slack)
        (HIGH, 29.1, "HIGH", ""),
        (MEDIUM, 58.9, "MEDIUM", "cooldown"),
        (MEDIUM, 59.1, "MEDIUM", ""),
        (MEDIUM, 40, "HIGH", "cooldown"),  # de-escalation waits for the lower level's cooldown
        (LOW, 358.9, "LOW", "cooldown"),
        (LOW, 359.1, "LOW", ""),
        (LOW, 300, "HIGH", "cooldown"),
    ],
)
def test_hold_back_at_each_boundary(signal, minutes_ago, prior_level, held):
    why = hold_back(signal, at(minutes_ago, prior_level), START.timestamp(), POLICY)
    assert why.split(",")[0] == (f"funding: {held}" if held else "")


def test_hold_back_reason_is_readable():
    why = hold_back(MEDIUM, at(20), START.timestamp(), POLICY)
    assert why == "funding: cooldown, HIGH alerted 20 min ago (MEDIUM cooldown 60 min)"


def test_the_newest_prior_decides():
    earlier = at(400, "LOW") + at(3, "LOW")
    assert "duplicate" in hold_back(LOW, earlier, START.timestamp(), POLICY)


def test_policy_is_configurable_and_validated():
    tight = Policy(dedup_s=60, cooldown_s={"HIGH": 120, "MEDIUM": 120, "LOW": 120}, slack_s=0)
    assert hold_back(HIGH, at(2.1), START.timestamp(), tight) == ""
    with pytest.raises(ValueError, match=r"dedup_s=-1: must be >= 0"):
        Policy(dedup_s=-1)
    with pytest.raises(ValueError, match=r"cooldown_s=.*needs exactly"):
        Policy(cooldown_s={"HIGH": 1})
    with pytest.raises(ValueError, match="level='URGENT' for rule 'x'"):
        SignalRef("x", "URGENT")


# --------------------------------------------------------------------------- claims over time


def test_dedup_across_alerts_of_different_keys(ledger, clock):
    sent(ledger, "a", HIGH)
    clock.advance(4)
    claim = ledger.claim("b", "BTC", [LOW], "1")
    assert not claim.granted
    assert claim.reason.startswith("suppressed: funding: duplicate, alerted 4 min ago")
    record = ledger.get("b")
    assert (record.status, record.error) == ("suppressed", claim.reason)
    clock.advance(2)
    assert ledger.claim("c", "BTC", [SignalRef("funding", "HIGH")], "1").granted is False
    assert ledger.claim("d", "ETH", [HIGH], "1").granted  # another coin is independent


@pytest.mark.parametrize(("level", "minutes"), [("HIGH", 30), ("MEDIUM", 60), ("LOW", 360)])
def test_each_cooldown_across_runs(ledger, clock, level, minutes):
    signal = SignalRef("oi_change", level)
    sent(ledger, "bar-0", signal)
    clock.advance(minutes - 2)
    held = ledger.claim("bar-1", "BTC", [signal], "1")
    assert not held.granted
    assert f"{level} cooldown {minutes if minutes < 120 else minutes / 60:.0f}" in held.reason
    clock.advance(1.5)  # within the slack: the next scheduled evaluation is not held back
    assert ledger.claim("bar-2", "BTC", [signal], "1").granted


def test_only_fresh_signals_are_claimed_and_held_ones_are_reported(ledger, clock):
    sent(ledger, "bar-0", HIGH)
    clock.advance(10)
    taker = SignalRef("taker_flow", "MEDIUM")
    claim = ledger.claim("bar-1", "BTC", [HIGH, taker], "1")
    assert claim.granted
    assert claim.fresh == (taker,)
    assert [s for s, _ in claim.held_back] == [HIGH]
    assert ledger.get("bar-1").rules == ("taker_flow",)
    # The held-back funding alert was not sent again, so it does not restart its cooldown.
    clock.advance(20)
    assert ledger.claim("bar-2", "BTC", [HIGH], "1").granted


def test_the_same_key_is_never_claimed_twice_while_in_flight_or_sent(ledger, clock):
    claim = claimed(ledger, "k", HIGH)
    again = ledger.claim("k", "BTC", [HIGH], "1")
    assert (again.granted, again.reason) == (False, "being sent by another run")
    assert ledger.mark_sending(claim, "<b>k</b>")
    assert ledger.claim("k", "BTC", [HIGH], "1").reason == "being sent by another run"
    assert ledger.mark_sent(claim, message_id=17, attempts=1)
    clock.advance(600)  # long after every cooldown
    again = ledger.claim("k", "BTC", [HIGH], "1")
    assert (again.granted, again.reason) == (False, "already sent as message 17")


def test_failed_and_suppressed_alerts_can_be_claimed_again(ledger, clock):
    first = sending(ledger, "k", HIGH)
    assert ledger.mark_failed(first, "chat 1 not found: check TELEGRAM_CHAT_ID", attempts=1)
    assert ledger.get("k").status == "failed"
    clock.advance(1)
    claim = ledger.claim("k", "BTC", [HIGH], "1")  # a failed alert holds nothing back
    assert (claim.granted, claim.repeat) == (True, False)
    assert claim.token != first.token
    record = ledger.get("k")
    assert (record.status, record.error, record.attempts) == ("pending", "", 1)
    ledger.suppress("s", "ETH", [HIGH], "1", "suppressed: no TELEGRAM_BOT_TOKEN")
    assert ledger.claim("s", "ETH", [HIGH], "1").granted


def test_suppress_never_overwrites_a_sent_alert(ledger):
    sent(ledger, "k", HIGH)
    record = ledger.suppress("k", "BTC", [HIGH], "1", "suppressed: alerts disabled")
    assert (record.status, ledger.get("k").status) == ("sent", "sent")


def test_a_claim_past_its_lease_that_never_began_sending_was_not_delivered(ledger, clock):
    first = claimed(ledger, "k", HIGH)  # the run stops here, alive but stuck (or elsewhere)
    clock.advance(9)
    assert not ledger.claim("other", "BTC", [SignalRef("funding", "HIGH")], "1").granted
    clock.advance(2)  # past the 10-minute lease
    assert ledger.claim("k", "BTC", [HIGH], "1").repeat is False  # nothing went out: no flag
    assert ledger.get("k").unconfirmed == 0
    # The stuck run wakes up: its claim is gone, so it may neither send nor record.
    assert ledger.mark_sending(first, "<b>late</b>") is False
    assert ledger.mark_failed(first, "late", attempts=0) is False
    assert ledger.get("k").status == "pending"


def test_an_abandoned_claim_before_sending_holds_nothing_back(ledger, clock):
    claimed(ledger, "k", HIGH)
    clock.advance(11)
    assert ledger.claim("other", "BTC", [HIGH], "1").granted  # no 10-minute mute
    record = ledger.get("k")
    assert (record.status, record.error) == (
        "failed",
        "abandoned before sending (its lease expired): not delivered",
    )


def test_an_abandoned_send_is_unknown_counts_as_sent_and_is_repeated_once(ledger, clock):
    first = sending(ledger, "k", HIGH)  # the run dies after the request went out
    clock.advance(11)
    held = ledger.claim("other", "BTC", [HIGH], "1")  # cooldown still applies
    assert held.reason == (
        "suppressed: funding: cooldown, HIGH alerted 11 min ago (HIGH cooldown 30 min)"
    )
    record = ledger.get("k")
    assert (record.status, record.unconfirmed) == ("unknown", 1)
    assert record.error == "abandoned while sending (its lease expired): delivery unknown"
    assert [r.key for r in ledger.undelivered("k", since=0)] == ["k"]
    repeat = ledger.claim("k", "BTC", [HIGH], "1")
    assert (repeat.granted, repeat.repeat) == (True, True)
    assert ledger.mark_sent(first, message_id=5, attempts=1) is False  # stale owner ignored
    assert ledger.mark_sending(repeat, "<b>k</b>")
    clock.advance(11)  # the repeat dies while sending too: two copies may be out, no third
    again = ledger.claim("k", "BTC", [HIGH], "1")
    assert again.reason == "delivery unknown after 2 sends: not sent again (at most one repeat)"
    assert ledger.undelivered("k", since=0) == []
    assert not ledger.claim("other", "BTC", [HIGH], "1").granted  # it still holds the rule


def test_a_send_without_answer_is_unknown_and_holds_back_like_a_sent_one(ledger, clock):
    claim = sending(ledger, "k", HIGH)
    assert ledger.mark_failed(claim, "no answer", attempts=2, unconfirmed=1)
    record = ledger.get("k")
    assert (record.status, record.unconfirmed, record.attempts) == ("unknown", 1, 2)
    clock.advance(10)
    assert "cooldown" in ledger.claim("other", "BTC", [HIGH], "1").reason
    # A later Telegram refusal does not forget the copy that may be out.
    repeat = ledger.claim("k", "BTC", [HIGH], "1")
    assert repeat.repeat
    assert ledger.mark_failed(repeat, "Forbidden", attempts=1)
    assert (ledger.get("k").status, ledger.get("k").unconfirmed) == ("failed", 1)
    assert ledger.claim("k", "BTC", [HIGH], "1").repeat


def test_marks_need_a_granted_claim(ledger):
    sent(ledger, "a", HIGH)
    refused = ledger.claim("b", "BTC", [HIGH], "1")
    with pytest.raises(ValueError, match="alert 'b': the claim was not granted"):
        ledger.mark_sent(refused, message_id=1, attempts=1)


def test_undelivered_lists_what_is_owed_by_prefix_and_age(ledger, clock):
    sent(ledger, "digest:BTC:1", HIGH)
    for key in ("digest:ETH:1", "headsup:ETH:1"):
        claim = sending(ledger, key, SignalRef("oi_change", "HIGH"), coin=key.split(":")[1])
        ledger.mark_failed(claim, "gave up after 4 attempts", attempts=4)
    clock.advance(30)
    claim = sending(ledger, "digest:SOL:2", HIGH, coin="SOL")
    ledger.mark_failed(claim, "no answer", attempts=2, unconfirmed=2)  # given up
    ledger.suppress("digest:XRP:2", "XRP", [HIGH], "1", "suppressed: stale inputs")
    claimed(ledger, "digest:ADA:2", HIGH, coin="ADA")  # in flight, not owed
    assert [r.key for r in ledger.undelivered("digest:", since=0)] == ["digest:ETH:1"]
    assert ledger.undelivered("digest:", since=clock() - 60) == []


def test_a_dead_local_owner_is_taken_back_without_waiting_for_the_lease(ledger, ledger_location):
    """A process claims and marks sending, then is killed -9: the next claim (no time passed)
    finds its process gone and takes the row back as of unknown delivery."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, ledger_location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().split() == ["sending", str(owner.pid)]
        assert ledger.claim("k", "BTC", [HIGH], "1").reason == "being sent by another run"
    finally:
        owner.kill()
        owner.wait(timeout=30)
    [owed] = ledger.undelivered("k", since=0)
    assert (owed.status, owed.unconfirmed) == ("unknown", 1)
    assert (
        owed.error == f"abandoned while sending (its process {owner.pid} is gone): delivery unknown"
    )
    repeat = ledger.claim("k", "BTC", [HIGH], "1")
    assert (repeat.granted, repeat.repeat) == (True, True)


OWNER = """
import os
import sys
from cg_assets.telegram.ledger import AlertLedger, SignalRef
ledger = AlertLedger(sys.argv[1])
claim = ledger.claim("k", "BTC", [SignalRef("funding", "HIGH")], "1")
assert ledger.mark_sending(claim, "<b>k</b>")
print("sending", os.getpid(), flush=True)
sys.stdin.readline()
"""


def _free_pid() -> int:
    """A pid no process of this namespace has now."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(p for p in range(pid_max // 2, pid_max) if not Path(f"/proc/{p}").exists())


def _can_make_pid_namespaces() -> bool:
    probe = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
    return bool(shutil.which("unshare")) and subprocess.run(probe, check=False).returncode == 0


@pytest.mark.skipif(not _can_make_pid_namespaces(), reason="needs unshare and CAP_SYS_ADMIN")
def test_a_live_owner_in_another_pid_namespace_is_left_to_its_lease(ledger_location):
    """The owner runs in a container of its own (a new PID namespace, same hostname) under a
    pid that no process has here: it is alive, so its claim must hold until the lease ends.
    A check by hostname and pid alone took it back, and its send would have been repeated."""
    pid = _free_pid()
    # The namespace's init (sh) sets the next pid, then starts the owner under it.
    init = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid && {sys.executable} -c "$0" "$1"'
    owner = subprocess.Popen(
        [
            *("unshare", "--pid", "--fork", "--mount-proc", "--kill-child"),
            *("sh", "-c", f"{init}; exit $?", OWNER),
            ledger_location,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().split() == ["sending", str(pid)]
        assert not process_alive(pid)  # so a pid check here would call it dead
        now = AlertLedger(ledger_location)  # the owner's lease runs on the wall clock
        assert now.claim("k", "BTC", [HIGH], "1").reason == "being sent by another run"
        later = AlertLedger(ledger_location, clock=lambda: time.time() + POLICY.lease_s + 1)
        [owed] = later.undelivered("k", since=0)
        assert (owed.status, owed.error) == (
            "unknown",
            "abandoned while sending (its lease expired): delivery unknown",
        )
        taken = later.claim("k", "BTC", [HIGH], "1")
        assert (taken.granted, taken.repeat) == (True, True)
    finally:
        owner.kill()
        owner.wait(timeout=30)


def test_process_alive(tmp_path):
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not process_alive(child.pid)  # reaped
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    assert not process_alive(zombie.pid)  # exited, not yet reaped
    zombie.wait(timeout=30)


def test_records_and_fields(ledger, clock):
    claim = ledger.claim("k", "BTC", [HIGH, SignalRef("oi_change", "MEDIUM")], "-100", reply_to=3)
    assert ledger.mark_sending(claim, "<b>BTC</b>")
    clock.advance(1)
    assert ledger.mark_sent(claim, message_id=9, attempts=2, note="attempt 1: timed out")
    [record] = ledger.records(coin="BTC", status="sent")
    assert record.rules == ("funding", "oi_change")
    assert (record.level, record.chat_id, record.reply_to) == ("HIGH", "-100", 3)
    assert (record.message_id, record.attempts, record.note) == (9, 2, "attempt 1: timed out")
    assert record.text == "<b>BTC</b>"
    assert record.updated_at - record.created_at == 60
    assert ledger.records(coin="ETH") == []


def test_the_file_is_sqlite_in_wal_mode_under_the_data_dir(tmp_path):
    path = tmp_path / "data" / "alerts" / "ledger.sqlite3"
    assert AlertLedger(ledger_path(tmp_path / "data")).ident == f"sqlite:{path}"
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_statements_are_rewritten_for_psycopg2():
    sql = "SELECT ':x', a::int FROM t WHERE k = :key AND e LIKE 'a%' || :why || '): x'"
    assert pg_sql(sql) == (
        "SELECT ':x', a::int FROM t WHERE k = %(key)s AND e LIKE 'a%%' || %(why)s || '): x'"
    )


def test_the_postgresql_ident_never_carries_the_password(postgres_dsn):
    ledger = AlertLedger(postgres_dsn.replace("@", ":s3cret@", 1))
    assert ledger.claim("k", "BTC", [HIGH], "1").granted  # trust authentication ignores it
    assert ledger.ident.startswith("postgresql:127.0.0.1:")
    assert "s3cret" not in ledger.ident


# --------------------------------------------------------------------------- atomicity


def test_racing_threads_claim_one_key_once(ledger_location):
    path = ledger_location
    AlertLedger(path)
    barrier = threading.Barrier(8)
    granted: list[bool] = []

    def race() -> None:
        ledger = AlertLedger(path)
        barrier.wait()
        granted.append(ledger.claim("digest:BTC", "BTC", [HIGH], "1").granted)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(granted) == [False] * 7 + [True]


CLAIMER = """
import sys
from cg_assets.telegram.ledger import AlertLedger, SignalRef
ledger = AlertLedger(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
won = 0
for i in range(20):
    claim = ledger.claim(f"bar-{i}", "BTC", [SignalRef("funding", "HIGH")], "1")
    if claim.granted:  # sent, as `deliver` would: a claim left pending dies with its process
        won += ledger.mark_sending(claim, "x") and ledger.mark_sent(claim, 1, attempts=1)
print(won)
"""


@pytest.mark.slow
def test_racing_processes_claim_each_alert_once_in_total(ledger_location):
    """Four processes claim 20 alerts of one (coin, rule) at the same moment: the first claim
    wins and the 5-minute dedup holds every other back, whichever process made it."""
    path = ledger_location
    AlertLedger(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    wins = [int(p.communicate("go\n", timeout=60)[0]) for p in procs]
    assert sum(wins) == 1
    assert len(AlertLedger(path).records(status="suppressed")) == 19


# --------------------------------------------------------------------------- older ledgers

# The ledger as the code before claim owners created it (schema version 0).
V0_SCHEMA = """
CREATE TABLE alerts (
    key TEXT PRIMARY KEY, coin TEXT NOT NULL, rules TEXT NOT NULL, level TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'suppressed')),
    error TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '', message_id INTEGER,
    reply_to INTEGER, attempts INTEGER NOT NULL DEFAULT 0, text TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, claimed_at REAL, updated_at REAL NOT NULL
);
CREATE TABLE alert_signals (
    key TEXT NOT NULL REFERENCES alerts (key) ON DELETE CASCADE, coin TEXT NOT NULL,
    rule TEXT NOT NULL, level TEXT NOT NULL, PRIMARY KEY (key, rule)
);
CREATE INDEX alert_signals_by_rule ON alert_signals (coin, rule);
CREATE INDEX alerts_by_status ON alerts (status, claimed_at);
"""


def test_a_ledger_of_the_previous_schema_is_migrated(tmp_path, clock):
    """Its rows and signals survive; a row that was pending may have been mid-send and one
    abandoned while sending was of unknown delivery, so both now say so."""
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    t = START.timestamp() - 60
    rows = [
        ("sent", "sent", "", 7),
        ("pending", "pending", "", None),
        ("abandoned", "failed", "abandoned while sending: the run stopped; delivery unknown", None),
        ("refused", "failed", "chat 1 not found", None),
        ("quiet", "suppressed", "suppressed: no TELEGRAM_BOT_TOKEN", None),
    ]
    with sqlite3.connect(path) as con:
        con.executescript(V0_SCHEMA)
        for key, status, error, message_id in rows:
            con.execute(
                "INSERT INTO alerts (key, coin, rules, level, chat_id, status, error, message_id,"
                " created_at, claimed_at, updated_at) VALUES (?, ?, 'funding', 'HIGH', '1',"
                " ?, ?, ?, ?, ?, ?)",
                (key, key, status, error, message_id, t, t, t),
            )  # each row its own coin, so no row holds another back
            con.execute("INSERT INTO alert_signals VALUES (?, ?, 'funding', 'HIGH')", (key, key))
    ledger = AlertLedger(path, clock=clock)
    records = {r.key: r for r in ledger.records()}
    assert {k: (r.status, r.unconfirmed) for k, r in records.items()} == {
        "sent": ("sent", 0),
        "pending": ("sending", 0),
        "abandoned": ("unknown", 1),
        "refused": ("failed", 0),
        "quiet": ("suppressed", 0),
    }
    assert records["sent"].message_id == 7
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM alert_signals").fetchone() == (5,)
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        assert con.execute("PRAGMA user_version").fetchone() == (1,)
    AlertLedger(path, clock=clock)  # opening it again changes nothing
    assert {r.key: r.status for r in ledger.records()}["pending"] == "sending"
    # The old pending row keeps its lease from when it was claimed, then counts as unknown.
    assert ledger.claim("pending", "pending", [HIGH], "1").reason == "being sent by another run"
    clock.advance(10)
    assert ledger.claim("pending", "pending", [HIGH], "1").repeat


def test_records_since_a_time_are_those_first_decided_then_or_later(ledger, clock):
    sent(ledger, "a", HIGH)
    clock.advance(60)
    boundary = clock()
    sent(ledger, "b", HIGH, coin="ETH")
    clock.advance(60)
    ledger.suppress("c", "BTC", [HIGH], "1", "suppressed: test")
    clock.advance(60)
    assert not ledger.claim("a", "BTC", [HIGH], "1").granted  # decided again: still "a"'s time
    assert [r.key for r in ledger.records(since=boundary)] == ["b", "c"]
    assert [r.key for r in ledger.records(coin="BTC", since=boundary)] == ["c"]
    assert [r.key for r in ledger.records(since=clock() + 1)] == []
    assert [r.key for r in ledger.records()] == ["a", "b", "c"]
