"""Crash semantics of alert delivery, with real processes killed at each point.

A child process materializes `telegram_alerts` (Dagster, the ledger, python-telegram-bot against
the Telegram stand-in) with a hook that stops it at one point of one digest's delivery: after
the claim before the send, after the send before it is recorded, or while an interrupt (a run
terminated with SIGTERM, which Dagster raises as `DagsterExecutionInterruptedError`) unwinds it.
There the test kills it with SIGKILL, or interrupts it and keeps it hanging, then runs a fresh
evaluation in this process and asserts the outcome the README promises: delivered once; or at
most one extra copy, flagged as a possible repeat; and the rule's cooldown still held. Time
moves through injected clocks (the child's is fixed), never through sleeps. Each test runs
with the ledger in a SQLite file and in PostgreSQL (`ledger_location`).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pytest

from cg_assets.settings import Settings
from cg_assets.sim import TelegramServer
from cg_assets.storage import Lake
from cg_assets.telegram.ledger import AlertLedger, SignalRef
from cg_assets.telegram.markup import flag_repeat
from cg_assets_tests.test_alerts.conftest import (
    BAR,
    CHAT,
    START,
    TOKEN,
    Clock,
    metadata,
    resource,
    run_alerts,
    write_bar,
)

pytestmark = pytest.mark.slow

FUNDING = ("funding", "HIGH", "Funding +0.12% per 8h: longs crowded")
TAKER = ("taker_flow", "MEDIUM", "Takers buying: 67% of volume")
KEY = "digest:BTC:2026-03-01T11:00Z"

# One evaluation at a fixed time (argv[2], epoch seconds) that stops at `point` (argv[1]).
CHILD = """
import sys
import dagster as dg
from cg_assets.alerts import assets
from cg_assets.resources import LakeResource
from cg_assets.resources.telegram import TelegramResource
from cg_assets.settings import Settings
from cg_assets.telegram.sender import TelegramSender

point, now, token, chat, where = sys.argv[1], float(sys.argv[2]), *sys.argv[3:6]


def pause(label):
    print(label, flush=True)
    sys.stdin.readline()  # where the test kills, interrupts or resumes the process


render = assets.render_digest


def render_then_pause(*args, **kwargs):  # `deliver` renders after the claim, before the send
    parts = render(*args, **kwargs)
    if point == "claimed":
        pause("claimed")
    return parts


send = TelegramSender.send


def send_then_pause(self, *args, **kwargs):
    if point == "sending":
        print("sending", flush=True)  # the stand-in delivers, then holds its answer back
    result = send(self, *args, **kwargs)
    if point == "sent":
        pause("sent")
    return result


assets.render_digest = render_then_pause
TelegramSender.send = send_then_pause
settings = Settings.from_env()
telegram = TelegramResource(
    bot_token=token, chat_id=chat, base_url=settings.telegram_api_base_url, ledger_location=where
)
with dg.instance_for_test() as instance:
    result = dg.materialize(
        [assets.build_alert_assets(settings, lambda: now)],
        resources={"telegram": telegram, "lake": LakeResource.at(settings.data_dir)},
        instance=instance,
        raise_on_error=False,
    )
print("finished" if result.success else "stopped", flush=True)
sys.stdin.readline()  # alive until the test ends it
"""


class Child:
    """The evaluation process; its stdout lines arrive through a queue, read with deadlines."""

    def __init__(self, world: World, point: str, now: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, point, str(now), TOKEN, str(CHAT), world.location],
            env=world.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("<exit>")

    def expect(self, line: str, timeout_s: float = 120.0) -> None:
        try:
            got = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            got = f"nothing within {timeout_s:.0f} s"
        if got != line:
            self.kill()
            assert self.proc.stderr is not None
            raise AssertionError(
                f"child said {got!r}, expected {line!r}:\n{self.proc.stderr.read()[-4000:]}"
            )

    def resume(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def terminate(self) -> None:
        """What Dagster does to a run it terminates: SIGTERM to the run's process."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9, and reap it, as a supervisor does."""
        self.proc.kill()
        self.proc.wait(timeout=60)


@pytest.fixture
def stand_in() -> Iterator[TelegramServer]:
    with TelegramServer(tokens=[TOKEN], chats=[CHAT]) as server:
        yield server


@dataclass(frozen=True)
class World:
    env: dict[str, str]  # the child's environment
    settings: Settings  # of both processes
    location: str  # the ledger's


@pytest.fixture
def world(env: dict[str, str], stand_in: TelegramServer, ledger_location: str) -> World:
    """Both processes' configuration, one digest to send."""
    child_env = {
        **os.environ,
        **env,
        "TELEGRAM_API_BASE_URL": stand_in.base_url,
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings.from_env(child_env)
    write_bar(Lake(settings.data_dir), BAR, {"BTC": [FUNDING, TAKER]})
    return World(child_env, settings, ledger_location)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as temp:
        yield temp


def evaluate(
    world: World,
    stand_in: TelegramServer,
    clock: Clock,
    instance: dg.DagsterInstance,
    *,
    minutes_later: float,
    new_bar: bool = False,
) -> dict:
    """A fresh `telegram_alerts` evaluation in this process; `new_bar`: a quiet bar closed in
    between (BTC has no signal on it), so only what is owed can be sent."""
    clock.advance(minutes_later)
    if new_bar:
        write_bar(Lake(world.settings.data_dir), BAR + timedelta(hours=1), {"BTC": []})
    telegram = resource(stand_in, ledger_location=world.location)
    result = run_alerts(world.settings, telegram, clock, instance)
    assert result.success
    return metadata(result)


def row(world: World, clock: Clock):
    return AlertLedger(world.location, clock=clock).get(KEY)


def test_killed_after_the_claim_before_the_send_the_next_evaluation_delivers_it_once(
    world, stand_in, instance
):
    clock = Clock(START)
    child = Child(world, "claimed", clock())
    child.expect("claimed")
    child.kill()
    assert row(world, clock).status == "pending"  # what the crash left
    # The next hourly evaluation: a newer, quiet bar; the 11:00 digest is still owed.
    meta = evaluate(world, stand_in, clock, instance, minutes_later=60, new_bar=True)
    [message] = stand_in.messages()
    assert (meta["sent"], meta["owed"]) == (1, [KEY])
    assert message.plain.startswith("🔴 BTC · 1 HIGH · 1 MEDIUM\n1h bar 2026-03-01 11:00 UTC")
    assert "Possible repeat" not in message.plain  # nothing had gone out
    record = row(world, clock)
    assert (record.status, record.message_id, record.unconfirmed) == ("sent", 1, 0)
    again = evaluate(world, stand_in, clock, instance, minutes_later=5)
    assert len(stand_in.messages()) == 1
    assert (again["sent"], again["owed"]) == (0, [])


def test_killed_after_the_send_before_the_record_one_flagged_copy_and_the_cooldown_holds(
    world, stand_in, instance
):
    clock = Clock(START)
    child = Child(world, "sent", clock())
    child.expect("sent")
    child.kill()
    [original] = stand_in.messages()  # sent, but never recorded
    # 15 minutes later another BTC funding alert (a heads-up, a manual run) is held back:
    # the copy that may be out counts for the 30-minute HIGH cooldown.
    clock.advance(15)
    held = AlertLedger(world.location, clock=clock).claim(
        "other:BTC", "BTC", [SignalRef("funding", "HIGH")], str(CHAT)
    )
    assert held.reason == (
        "suppressed: funding: cooldown, HIGH alerted 15 min ago (HIGH cooldown 30 min)"
    )
    assert (row(world, clock).status, row(world, clock).unconfirmed) == ("unknown", 1)
    meta = evaluate(world, stand_in, clock, instance, minutes_later=45, new_bar=True)
    first, repeat = stand_in.messages()
    assert first == original
    assert repeat.text == flag_repeat(original.text)  # the same digest, flagged
    assert (meta["sent"], meta["owed"]) == (1, [KEY])
    record = row(world, clock)
    assert (record.status, record.message_id, record.unconfirmed) == ("sent", 2, 1)
    assert record.note == "possible repeat: an earlier send's delivery was unknown"
    again = evaluate(world, stand_in, clock, instance, minutes_later=5)
    assert again["sent"] == 0
    assert len(stand_in.messages()) == 2


def test_terminated_before_the_send_the_claim_is_released_at_once(world, stand_in, instance):
    """The interrupted process hangs on (it is alive, its lease runs): the next evaluation,
    with no time passed, sends the digest because the interrupt released the claim."""
    clock = Clock(START)
    child = Child(world, "claimed", clock())
    child.expect("claimed")
    child.terminate()
    child.expect("stopped")
    released = row(world, clock)
    meta = evaluate(world, stand_in, clock, instance, minutes_later=0)
    child.kill()
    assert meta["sent"] == 1
    [message] = stand_in.messages()
    assert "Possible repeat" not in message.plain
    assert (released.status, released.error) == (
        "failed",
        "stopped before sending: DagsterExecutionInterruptedError",
    )
    assert evaluate(world, stand_in, clock, instance, minutes_later=5)["sent"] == 0
    assert len(stand_in.messages()) == 1


def test_terminated_while_sending_one_flagged_copy_follows_at_once(world, stand_in, instance):
    """Telegram has the message, its answer is late, the run is terminated: delivery is
    unknown, so the next evaluation sends one flagged copy, and no third."""
    stand_in.faults.update({"slow": 1, "slow_s": 60.0, "slow_delivers": True})
    clock = Clock(START)
    child = Child(world, "sending", clock())
    child.expect("sending")
    [original] = stand_in.wait_for_messages(1, timeout_s=60)
    child.terminate()
    child.expect("stopped")
    released = row(world, clock)
    meta = evaluate(world, stand_in, clock, instance, minutes_later=1)
    child.kill()
    assert meta["sent"] == 1
    first, repeat = stand_in.messages()
    assert (first, repeat.text) == (original, flag_repeat(original.text))
    assert (released.status, released.error) == (
        "unknown",
        "stopped while sending, delivery unknown: DagsterExecutionInterruptedError",
    )
    assert evaluate(world, stand_in, clock, instance, minutes_later=5)["sent"] == 0
    assert len(stand_in.messages()) == 2


@pytest.mark.parametrize(
    ("point", "expected_texts"),
    [
        ("claimed", ["digest"]),  # the stale owner never sends
        ("sent", ["digest", "flagged digest"]),  # its copy is out; the takeover's is flagged
    ],
)
def test_a_stale_owner_past_its_lease_neither_sends_nor_records(
    world, stand_in, instance, point, expected_texts
):
    """The owner does not die but stalls (or runs where its process cannot be seen): its
    claim holds for the 10-minute lease, then the next evaluation takes over, and when the
    stalled run resumes the ledger refuses its marks."""
    clock = Clock(START)
    child = Child(world, point, clock())
    child.expect(point)
    try:
        waiting = evaluate(world, stand_in, clock, instance, minutes_later=5)
        assert (waiting["sent"], waiting["skipped"]) == (0, 1)  # "being sent by another run"
        taken = evaluate(world, stand_in, clock, instance, minutes_later=6)
        assert taken["sent"] == 1
        ours = row(world, clock)
        child.resume()
        child.expect("finished")
    finally:
        child.kill()
    messages = stand_in.messages()
    digest = messages[0].text.removeprefix(flag_repeat(""))
    texts = {digest: "digest", flag_repeat(digest): "flagged digest"}
    assert [texts[m.text] for m in messages] == expected_texts
    after = row(world, clock)
    assert (after.status, after.message_id, after.note) == ("sent", ours.message_id, ours.note)
    assert ours.message_id == len(messages)  # the takeover's send is the one on record
