"""The ledger's decisions: de-dup, per-level cooldowns, statuses, and atomic claims.

Time moves through an injected clock; concurrency is real (threads and processes on one file).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cg_assets.telegram.ledger import AlertLedger, Policy, Prior, SignalRef, hold_back, ledger_path
from cg_assets_tests.test_alerts.conftest import START, Clock

HIGH = SignalRef("funding", "HIGH")
MEDIUM = SignalRef("funding", "MEDIUM")
LOW = SignalRef("funding", "LOW")
POLICY = Policy()


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> AlertLedger:
    return AlertLedger(ledger_path(tmp_path), clock=clock)


def sent(ledger: AlertLedger, key: str, *signals: SignalRef, coin: str = "BTC") -> None:
    claim = ledger.claim(key, coin, signals, "1")
    assert claim.granted, claim.reason
    ledger.mark_sent(key, message_id=1, attempts=1)


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


def test_the_same_key_is_never_claimed_twice_while_pending_or_sent(ledger, clock):
    assert ledger.claim("k", "BTC", [HIGH], "1").granted
    again = ledger.claim("k", "BTC", [HIGH], "1")
    assert (again.granted, again.reason) == (False, "being sent by another run")
    ledger.mark_sent("k", message_id=17, attempts=1)
    clock.advance(600)  # long after every cooldown
    again = ledger.claim("k", "BTC", [HIGH], "1")
    assert (again.granted, again.reason) == (False, "already sent as message 17")


def test_failed_and_suppressed_alerts_can_be_claimed_again(ledger, clock):
    assert ledger.claim("k", "BTC", [HIGH], "1").granted
    ledger.mark_failed("k", "chat 1 not found: check TELEGRAM_CHAT_ID", attempts=1)
    assert ledger.get("k").status == "failed"
    clock.advance(1)
    claim = ledger.claim("k", "BTC", [HIGH], "1")  # a failed alert holds nothing back
    assert claim.granted
    record = ledger.get("k")
    assert (record.status, record.error, record.attempts) == ("pending", "", 1)
    ledger.suppress("s", "ETH", [HIGH], "1", "suppressed: no TELEGRAM_BOT_TOKEN")
    assert ledger.claim("s", "ETH", [HIGH], "1").granted


def test_suppress_never_overwrites_a_sent_alert(ledger):
    sent(ledger, "k", HIGH)
    record = ledger.suppress("k", "BTC", [HIGH], "1", "suppressed: alerts disabled")
    assert (record.status, ledger.get("k").status) == ("sent", "sent")


def test_a_pending_row_of_a_dead_run_is_released_after_the_lease(ledger, clock):
    assert ledger.claim("k", "BTC", [HIGH], "1").granted  # the run dies here
    clock.advance(9)
    assert not ledger.claim("other", "BTC", [SignalRef("funding", "HIGH")], "1").granted
    clock.advance(2)  # past the 10-minute lease
    ledger.claim("x", "ETH", [HIGH], "1")
    record = ledger.get("k")
    assert record.status == "failed"
    assert "delivery unknown" in record.error


def test_records_and_fields(ledger, clock):
    assert ledger.claim(
        "k", "BTC", [HIGH, SignalRef("oi_change", "MEDIUM")], "-100", reply_to=3
    ).granted
    ledger.set_text("k", "<b>BTC</b>")
    clock.advance(1)
    ledger.mark_sent("k", message_id=9, attempts=2, note="attempt 1: timed out")
    [record] = ledger.records(coin="BTC", status="sent")
    assert record.rules == ("funding", "oi_change")
    assert (record.level, record.chat_id, record.reply_to) == ("HIGH", "-100", 3)
    assert (record.message_id, record.attempts, record.note) == (9, 2, "attempt 1: timed out")
    assert record.text == "<b>BTC</b>"
    assert record.updated_at - record.created_at == 60
    assert ledger.records(coin="ETH") == []
    with pytest.raises(KeyError, match="no alert with key 'nope'"):
        ledger.mark_sent("nope", 1, 1)


def test_the_file_is_sqlite_in_wal_mode_under_the_data_dir(tmp_path):
    ledger = AlertLedger(ledger_path(tmp_path / "data"))
    assert ledger.path == tmp_path / "data" / "alerts" / "ledger.sqlite3"
    with sqlite3.connect(ledger.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --------------------------------------------------------------------------- atomicity


def test_racing_threads_claim_one_key_once(tmp_path):
    path = ledger_path(tmp_path)
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
won = [ledger.claim(f"bar-{i}", "BTC", [SignalRef("funding", "HIGH")], "1").granted
       for i in range(20)]
print(sum(won))
"""


@pytest.mark.slow
def test_racing_processes_claim_each_alert_once_in_total(tmp_path):
    """Four processes claim 20 alerts of one (coin, rule) at the same moment: the first claim
    wins and the 5-minute dedup holds every other back, whichever process made it."""
    path = ledger_path(tmp_path)
    AlertLedger(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path)],
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
