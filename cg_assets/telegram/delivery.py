"""One alert end to end: claim it in the ledger, send it, record what became of it.

Kept apart from `sender` (python-telegram-bot and httpx) so that loading the code location, and
everything that only records alerts, does not import the Telegram client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cg_assets.telegram.ledger import AlertLedger, SignalRef

if TYPE_CHECKING:
    from cg_assets.telegram.sender import TelegramSender

TOKEN_SETTING = "TELEGRAM_BOT_TOKEN"
CHAT_SETTING = "TELEGRAM_CHAT_ID"


OutcomeStatus = Literal["sent", "failed", "suppressed", "skipped"]
Render = Callable[[Sequence[SignalRef], Sequence[tuple[SignalRef, str]]], list[str]]


@dataclass(frozen=True)
class Outcome:
    """What `deliver` did with one alert. `skipped`: the key was already sent or in flight."""

    key: str
    coin: str
    status: OutcomeStatus
    reason: str
    message_id: int | None
    text: str
    migrate_to_chat_id: int | None = None


def deliver(
    ledger: AlertLedger,
    sender: TelegramSender | None,
    *,
    key: str,
    coin: str,
    signals: Sequence[SignalRef],
    chat_id: str,
    render: Render,
    reply_to: int | None = None,
    suppress_reason: str = "",
    chat_setting: str = CHAT_SETTING,
) -> Outcome:
    """Claim, send and record one alert; never raises for Telegram's answers.

    `render(fresh, held_back)` returns the message parts for the signals that survived the
    hold-back rules (and those held back, e.g. to name them). With `suppress_reason` the alert
    is only recorded as suppressed, rendered for all its signals so the ledger shows what
    would have gone out. Otherwise `sender` must be open.
    """
    if suppress_reason:
        text = "\n".join(render(signals, ()))
        record = ledger.suppress(key, coin, signals, chat_id, suppress_reason, text)
        if record.status in ("pending", "sent"):
            return Outcome(key, coin, "skipped", "already sent or in flight", None, record.text)
        return Outcome(key, coin, "suppressed", suppress_reason, None, text)
    if sender is None:
        raise ValueError(f"alert {key!r}: no sender and no suppress_reason")
    claim = ledger.claim(key, coin, signals, chat_id, reply_to=reply_to)
    if not claim.granted:
        status: OutcomeStatus = "suppressed" if claim.record.status == "suppressed" else "skipped"
        return Outcome(key, coin, status, claim.reason, claim.record.message_id, claim.record.text)
    started = time.monotonic()
    try:
        parts = render(claim.fresh, claim.held_back)
        text = "\n".join(parts)
        ledger.set_text(key, text)
        result = sender.send(chat_id, parts, reply_to=reply_to, chat_setting=chat_setting)
    except Exception as exc:  # a bug, not Telegram: release the claim, then let it surface
        ledger.mark_failed(key, sender.redact(f"{type(exc).__name__}: {exc}"), attempts=0)
        raise
    if result.ok:
        assert result.message_id is not None
        note = result.note
        if result.attempts > len(parts):
            note = f"sent after {result.attempts} attempts in {time.monotonic() - started:.1f} s"
            note += f": {result.note}"
        ledger.mark_sent(key, result.message_id, result.attempts, note)
        return Outcome(key, coin, "sent", note, result.message_id, text)
    ledger.mark_failed(key, result.error, result.attempts, result.message_id)
    return Outcome(
        key, coin, "failed", result.error, result.message_id, text, result.migrate_to_chat_id
    )
