"""Every Telegram fault through the real python-telegram-bot client and the real stand-in.

Waits between attempts go through an injected sleep that records them (one test waits for
real), so flood control is asserted by the seconds asked for, not by wall time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from types import FrameType

import dagster as dg
import pytest

from cg_assets.sim import TelegramServer
from cg_assets.telegram.delivery import deliver
from cg_assets.telegram.ledger import AlertLedger, SignalRef
from cg_assets.telegram.markup import flag_repeat
from cg_assets.telegram.sender import SendResult, TelegramSender
from cg_assets_tests.test_alerts.conftest import CHAT, TOKEN


class Waits:
    """An async sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
def waits() -> Waits:
    return Waits()


def sender(tg: TelegramServer, waits: Waits, token: str = TOKEN, **options) -> TelegramSender:
    return TelegramSender(token, tg.base_url, sleep=waits, backoff_s=0.5, **options)


def send_one(tg: TelegramServer, waits: Waits, text: str = "<b>BTC</b>", **options) -> SendResult:
    with sender(tg, waits, **options) as s:
        return s.send(CHAT, text)


def test_sends_html_replies_and_parts_with_one_token_check(telegram, waits):
    with sender(telegram, waits) as s:
        first = s.send(CHAT, "<b>heads-up</b> BTC")
        reply = s.send(CHAT, "confirmed", reply_to=first.message_id)
        split = s.send(CHAT, ["part <i>1</i>", "part 2"])
        orphan = s.send(CHAT, "reply to a deleted message", reply_to=999)
    assert (first.ok, first.message_ids, first.attempts) == (True, (1,), 1)
    assert reply.message_ids == (2,)
    assert split.message_ids == (3, 4)
    assert orphan.ok
    received = telegram.messages()
    assert [(m.plain, m.reply_to) for m in received] == [
        ("heads-up BTC", None),
        ("confirmed", 1),
        ("part 1", None),
        ("part 2", None),
        ("reply to a deleted message", None),
    ]
    assert all(m.parse_mode == "HTML" for m in received)
    assert telegram.requests["getMe"] == 1


def test_retry_after_is_honoured_then_sent_once(telegram, waits):
    telegram.faults.update({"flood": 2, "retry_after": 3})
    result = send_one(telegram, waits)
    assert (result.ok, result.attempts) == (True, 3)
    assert waits.seconds == [3.0, 3.0]
    assert "flood control, Telegram asked to wait 3 s" in result.note
    assert len(telegram.messages()) == 1


def test_retry_after_waits_for_real(telegram):
    telegram.faults.update({"flood": 1, "retry_after": 1})
    started = time.monotonic()
    with TelegramSender(TOKEN, telegram.base_url) as s:
        result = s.send(CHAT, "x")
    assert result.ok
    assert time.monotonic() - started >= 1.0
    assert len(telegram.messages()) == 1


def test_retry_after_beyond_the_wait_budget_fails_without_waiting(telegram, waits):
    telegram.faults.update({"flood": 5, "retry_after": 30})
    result = send_one(telegram, waits, max_wait_s=10)
    assert (result.ok, result.permanent) == (False, False)
    assert "a further wait of 30 s exceeds the 10 s budget" in result.error
    assert waits.seconds == []
    assert telegram.requests["sendMessage"] == 1


def test_server_errors_are_retried_with_backoff(telegram, waits):
    telegram.faults.update({"server_error": 2})
    result = send_one(telegram, waits)
    assert (result.ok, result.attempts, waits.seconds) == (True, 3, [0.5, 1.0])
    assert "network error: Internal Server Error" in result.note
    assert len(telegram.messages()) == 1


def test_gives_up_after_max_attempts(telegram, waits):
    telegram.faults.update({"server_error": 10})
    result = send_one(telegram, waits, max_attempts=3)
    assert (result.ok, result.permanent) == (False, False)
    assert result.error.startswith("gave up after 3 attempts; last error: network error")
    assert telegram.requests["sendMessage"] == 3
    assert telegram.messages() == []


def test_a_timeout_before_delivery_is_retried_and_sent_once_flagged(telegram, waits):
    """The sender cannot tell a lost request from a lost answer: the only copy is flagged."""
    telegram.faults.update({"slow": 1, "slow_s": 1.0, "slow_delivers": False})
    result = send_one(telegram, waits, read_timeout_s=0.3)
    assert (result.ok, result.attempts, result.unconfirmed) == (True, 2, 1)
    assert "timed out waiting for Telegram's answer" in result.note
    [message] = telegram.messages()
    assert (message.message_id, result.message_id) == (1, 1)
    assert message.text == flag_repeat("<b>BTC</b>")


def test_a_timeout_after_delivery_is_repeated_once_and_flagged(telegram, waits):
    """Telegram delivered, the answer came too late: the resend shows the message twice, the
    second copy saying it may be a repeat."""
    telegram.faults.update({"slow": 1, "slow_s": 1.0, "slow_delivers": True})
    result = send_one(telegram, waits, read_timeout_s=0.3)
    assert (result.ok, result.attempts) == (True, 2)
    assert "the message may have been delivered" in result.note
    first, second = telegram.wait_for_messages(2)
    assert (first.text, second.text) == ("<b>BTC</b>", flag_repeat("<b>BTC</b>"))
    assert second.plain.startswith("↻ Possible repeat: an earlier send of this alert may have")
    assert result.message_id == 2


def test_a_second_send_without_answer_is_not_repeated(telegram, waits):
    """Two sends without answer: two copies may be out, so there is no third attempt, and the
    result says delivery is unknown rather than failed."""
    telegram.faults.update({"slow": 3, "slow_s": 1.0, "slow_delivers": True})
    result = send_one(telegram, waits, read_timeout_s=0.3)
    assert (result.ok, result.attempts, result.unconfirmed) == (False, 2, 2)
    assert result.error.startswith("no answer from Telegram, delivery unknown: not sent again")
    assert telegram.requests["sendMessage"] == 2
    assert [m.text for m in telegram.wait_for_messages(2)] == [
        "<b>BTC</b>",
        flag_repeat("<b>BTC</b>"),
    ]


def test_a_repeat_is_not_resent_after_no_answer(telegram, waits):
    telegram.faults.update({"slow": 2, "slow_s": 1.0, "slow_delivers": False})
    with sender(telegram, waits, read_timeout_s=0.3) as s:
        result = s.send(CHAT, flag_repeat("x"), resend_unknown=False)
    assert (result.ok, result.attempts, result.unconfirmed) == (False, 1, 1)
    assert telegram.requests["sendMessage"] == 1


@pytest.mark.parametrize(
    ("fault", "chat", "text", "expected"),
    [
        ("chat_not_found", CHAT, "x", f"chat {CHAT} not found: check TELEGRAM_CHAT_ID"),
        (None, 999, "x", "chat 999 not found: check TELEGRAM_CHAT_ID (the bot must be a member"),
        ("forbidden", CHAT, "x", "Forbidden: bot was blocked by the user): unblock the bot"),
        (None, CHAT, "<p>x</p>", "Telegram rejected the message: Can't parse entities"),
        (None, CHAT, "y" * 5000, "Telegram rejected the message: Message is too long"),
    ],
)
def test_permanent_errors_fail_once_and_say_what_to_fix(
    telegram, waits, fault, chat, text, expected
):
    if fault:
        telegram.faults.update({fault: 5})  # would fail every retry: none may happen
    with sender(telegram, waits) as s:
        result = s.send(chat, text)
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert expected in result.error
    assert telegram.requests["sendMessage"] == 1
    assert waits.seconds == []


def test_the_chat_setting_is_named_for_ops_messages(telegram, waits):
    telegram.faults.update({"chat_not_found": 1})
    with sender(telegram, waits) as s:
        result = s.send(CHAT, "ops", chat_setting="TELEGRAM_OPS_CHAT_ID")
    assert "check TELEGRAM_OPS_CHAT_ID" in result.error


def test_a_rejected_token_fails_every_alert_without_asking_again(telegram, waits):
    with sender(telegram, waits, token="777000111:wrong") as s:
        results = [s.send(CHAT, "x"), s.send(CHAT, "y")]
    for result in results:
        assert (result.ok, result.permanent) == (False, True)
        assert result.error.startswith("Telegram rejected the bot token (401 Unauthorized)")
        assert "set TELEGRAM_BOT_TOKEN" in result.error
    assert (telegram.requests["getMe"], telegram.requests["sendMessage"]) == (1, 0)


def test_a_token_revoked_after_the_check(telegram, waits):
    with sender(telegram, waits) as s:
        assert s.send(CHAT, "ok").ok
        telegram.faults.update({"unauthorized": 3})
        result = s.send(CHAT, "revoked")
    assert (result.permanent, result.attempts) == (True, 1)
    assert "TELEGRAM_BOT_TOKEN" in result.error


def test_a_migrated_chat_names_the_new_chat_id(telegram, waits):
    telegram.add_chat(-4001)
    telegram.migrate_chat(-4001, -1004001)
    with sender(telegram, waits) as s:
        result = s.send(-4001, "x")
    assert (result.ok, result.permanent, result.migrate_to_chat_id) == (False, True, -1004001)
    assert "set TELEGRAM_CHAT_ID=-1004001" in result.error
    assert telegram.requests["sendMessage"] == 1


def test_a_failed_part_reports_what_was_delivered(telegram, waits):
    with sender(telegram, waits) as s:
        result = s.send(CHAT, ["fine", "<x>broken</x>", "never sent"])
    assert (result.ok, result.message_ids) == (False, (1,))
    assert result.error.startswith("part 2/3: Telegram rejected the message")
    assert [m.plain for m in telegram.messages()] == ["fine"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_token_never_appears_in_logs_errors_or_notes(caplog, waits):
    secret = "987654321:AAF-very-secret-token-value"
    caplog.set_level(logging.DEBUG)
    results = []
    with TelegramServer(tokens=[secret], chats=[CHAT]) as tg:
        tg.faults.update({"server_error": 1, "slow": 1, "slow_s": 0.6, "flood": 1})
        with sender(tg, waits, token=secret, read_timeout_s=0.3) as s:
            results.append(s.send(CHAT, "x"))
            results.append(s.send(999, "x"))
        with sender(tg, waits, token=secret + "x") as s:  # rejected: PTB puts it in the error
            results.append(s.send(CHAT, "x"))
        tg.faults.update({"unauthorized": 1})
        with sender(tg, waits, token=secret) as s:
            results.append(s.send(CHAT, "x"))
    dead = f"http://127.0.0.1:{free_port()}"
    with TelegramSender(secret, dead, sleep=waits, max_attempts=2) as s:
        results.append(s.send(CHAT, "x"))
    assert [r.ok for r in results] == [True, False, False, False, False]
    captured = caplog.text + repr(results)
    assert secret not in captured
    assert secret.split(":")[1] not in captured
    assert "/bot<redacted>/sendMessage" in caplog.text  # httpx logged the URL, redacted


# --------------------------------------------------------------------------- deliver()


def render(fresh: Sequence[SignalRef], held: Sequence) -> list[str]:
    return [f"<b>{', '.join(s.rule for s in fresh)}</b>"]


@pytest.fixture
def ledger(ledger_location: str) -> AlertLedger:
    return AlertLedger(ledger_location)


def test_deliver_claims_sends_and_records_a_reply(telegram, waits, ledger):
    heads_up = [SignalRef("liquidation_burst", "HIGH")]
    with sender(telegram, waits) as s:
        first = deliver(
            ledger, s, key="heads-up:BTC:1", coin="BTC", signals=heads_up, chat_id=str(CHAT),
            render=render,
        )  # fmt: skip
        follow = deliver(
            ledger, s, key="confirm:BTC:1", coin="BTC", signals=[SignalRef("confirm", "HIGH")],
            chat_id=str(CHAT), render=render,
            reply_to=ledger.get("heads-up:BTC:1").message_id,
        )  # fmt: skip
        again = deliver(
            ledger, s, key="heads-up:BTC:1", coin="BTC", signals=heads_up, chat_id=str(CHAT),
            render=render,
        )  # fmt: skip
    assert (first.status, first.message_id, follow.status) == ("sent", 1, "sent")
    assert (again.status, again.reason) == ("skipped", "already sent as message 1")
    assert [(m.plain, m.reply_to) for m in telegram.messages()] == [
        ("liquidation_burst", None),
        ("confirm", 1),
    ]
    record = ledger.get("confirm:BTC:1")
    assert (record.status, record.message_id, record.reply_to) == ("sent", 2, 1)
    assert record.text == "<b>confirm</b>"


def test_deliver_records_failure_then_sends_once_fixed(telegram, waits, ledger):
    signals = [SignalRef("funding", "HIGH")]
    telegram.faults.update({"forbidden": 1})
    with sender(telegram, waits) as s:
        failed = deliver(
            ledger, s, key="k", coin="BTC", signals=signals, chat_id=str(CHAT), render=render
        )
        record = ledger.get("k")
        assert (failed.status, record.status, record.attempts) == ("failed", "failed", 1)
        assert "unblock the bot" in record.error
        retried = deliver(
            ledger, s, key="k", coin="BTC", signals=signals, chat_id=str(CHAT), render=render
        )
    assert retried.status == "sent"
    assert ledger.get("k").status == "sent"
    assert len(telegram.messages()) == 1


def test_deliver_notes_retries_in_the_ledger(telegram, waits, ledger):
    telegram.faults.update({"slow": 1, "slow_s": 1.0, "slow_delivers": True})
    with sender(telegram, waits, read_timeout_s=0.3) as s:
        outcome = deliver(
            ledger, s, key="k", coin="BTC", signals=[SignalRef("funding", "HIGH")],
            chat_id=str(CHAT), render=render,
        )  # fmt: skip
    record = ledger.get("k")
    assert (outcome.status, record.attempts) == ("sent", 2)
    assert record.note.startswith("sent after 2 attempts")
    assert "may have been delivered" in record.note


def test_deliver_with_a_suppress_reason_records_the_text_and_sends_nothing(telegram, ledger):
    outcome = deliver(
        ledger, None, key="k", coin="BTC", signals=[SignalRef("funding", "HIGH")],
        chat_id="", render=render, suppress_reason="suppressed: no TELEGRAM_BOT_TOKEN",
    )  # fmt: skip
    record = ledger.get("k")
    assert (outcome.status, record.status) == ("suppressed", "suppressed")
    assert record.error == "suppressed: no TELEGRAM_BOT_TOKEN"
    assert record.text == "<b>funding</b>"
    assert telegram.requests["sendMessage"] == 0


def test_a_rendering_bug_releases_the_claim_and_surfaces(telegram, waits, ledger):
    def broken(fresh: Sequence[SignalRef], held: Sequence) -> list[str]:
        raise ValueError("a single line has 5000 characters")

    with sender(telegram, waits) as s, pytest.raises(ValueError, match="5000 characters"):
        deliver(
            ledger, s, key="k", coin="BTC", signals=[SignalRef("funding", "HIGH")],
            chat_id=str(CHAT), render=broken,
        )  # fmt: skip
    record = ledger.get("k")
    assert (record.status, record.error, record.unconfirmed) == (
        "failed",
        "stopped before sending: ValueError: a single line has 5000 characters",
        0,
    )
    assert telegram.requests["sendMessage"] == 0


def test_deliver_records_two_sends_without_answer_as_unknown_and_stops(telegram, waits, ledger):
    telegram.faults.update({"slow": 2, "slow_s": 1.0, "slow_delivers": True})
    signals = [SignalRef("funding", "HIGH")]
    with sender(telegram, waits, read_timeout_s=0.3) as s:
        first = deliver(
            ledger, s, key="k", coin="BTC", signals=signals, chat_id=str(CHAT), render=render
        )
        again = deliver(
            ledger, s, key="k", coin="BTC", signals=signals, chat_id=str(CHAT), render=render
        )
    assert first.status == "unknown"
    record = ledger.get("k")
    assert (record.status, record.unconfirmed) == ("unknown", 2)
    assert (again.status, again.reason) == (
        "skipped",
        "delivery unknown after 2 sends: not sent again (at most one repeat)",
    )
    assert len(telegram.wait_for_messages(2)) == 2
    assert telegram.requests["sendMessage"] == 2


class Stopped(BaseException):
    """What a run's SIGTERM handler raises (Dagster's raises DagsterExecutionInterruptedError)."""


@pytest.fixture
def stop_handler() -> Iterator[None]:
    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("stop_handler")
def test_a_stop_landing_inside_an_event_loop_callback_stops_the_send(telegram):
    """Seen in CI: a run's SIGTERM landed while asyncio was writing to the socket, in a
    callback that turns any exception but SystemExit and KeyboardInterrupt into a connection
    error; PTB retried, the message went out, and the run's termination was lost. Here the
    signal arrives from a loop callback during flood control's wait: the send must stop
    there, with the handler's exception, and not try again."""

    async def wait_and_get_stopped(seconds: float) -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)

    telegram.faults.update({"flood": 1, "retry_after": 1})
    with (
        pytest.raises(Stopped),
        TelegramSender(TOKEN, telegram.base_url, sleep=wait_and_get_stopped) as s,
    ):
        s.send(CHAT, "<b>BTC</b>")
    assert telegram.requests["sendMessage"] == 1
    assert telegram.messages() == []
    assert signal.getsignal(signal.SIGTERM).__name__ == "on_sigterm"  # given back


@pytest.mark.usefixtures("stop_handler")
def test_a_stop_handler_that_raises_nothing_lets_the_send_finish(telegram):
    noted: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))

    async def wait_and_get_signalled(seconds: float) -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)

    telegram.faults.update({"flood": 1, "retry_after": 1})
    with TelegramSender(TOKEN, telegram.base_url, sleep=wait_and_get_signalled) as s:
        result = s.send(CHAT, "<b>BTC</b>")
    assert (result.ok, result.attempts, noted) == (True, 2, [signal.SIGTERM])
    assert [m.text for m in telegram.messages()] == ["<b>BTC</b>"]


class Interrupting:
    """A sender whose send goes out, then is interrupted the way a terminated run is."""

    def __init__(self, inner: TelegramSender, interrupt: type[BaseException]) -> None:
        self.inner = inner
        self.interrupt = interrupt

    def redact(self, text: str) -> str:
        return self.inner.redact(text)

    def send(self, *args, **kwargs) -> SendResult:
        self.inner.send(*args, **kwargs)
        raise self.interrupt()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, dg.DagsterExecutionInterruptedError])
def test_an_interrupt_releases_the_claim_at_once(telegram, waits, ledger, interrupt):
    """Interrupted before sending: failed, and the next delivery (no time passed) sends it.
    Interrupted while sending: unknown, holds the rule back, and is repeated once, flagged."""
    signals = [SignalRef("funding", "HIGH")]

    def interrupted_render(fresh: Sequence[SignalRef], held: Sequence) -> list[str]:
        raise interrupt()

    with sender(telegram, waits) as s:
        with pytest.raises(interrupt):
            deliver(
                ledger, s, key="a", coin="BTC", signals=signals, chat_id=str(CHAT),
                render=interrupted_render,
            )  # fmt: skip
        record = ledger.get("a")
        assert (record.status, record.error) == (
            "failed",
            f"stopped before sending: {interrupt.__name__}",
        )
        first = deliver(
            ledger, s, key="a", coin="BTC", signals=signals, chat_id=str(CHAT), render=render
        )
        assert first.status == "sent"
        with pytest.raises(interrupt):
            deliver(
                ledger, Interrupting(s, interrupt), key="b", coin="ETH", signals=signals,
                chat_id=str(CHAT), render=render,
            )  # fmt: skip
        record = ledger.get("b")
        assert (record.status, record.unconfirmed) == ("unknown", 1)
        assert record.error == f"stopped while sending, delivery unknown: {interrupt.__name__}"
        held = ledger.claim("c", "ETH", signals, str(CHAT))
        assert held.reason.startswith("suppressed: funding: duplicate")  # "b" holds the rule
        repeat = deliver(
            ledger, s, key="b", coin="ETH", signals=signals, chat_id=str(CHAT), render=render
        )
    assert repeat.status == "sent"
    assert [m.text for m in telegram.messages()] == [
        "<b>funding</b>",
        "<b>funding</b>",
        flag_repeat("<b>funding</b>"),
    ]
    assert ledger.get("b").note == "possible repeat: an earlier send's delivery was unknown"
