"""One alert end to end: claim it in the ledger, send it, record what became of it.

Whatever stops the run between the claim and the record, the ledger row ends up saying how far
it got (see `ledger` for the states): an exception or an interrupt (`KeyboardInterrupt`,
Dagster's `DagsterExecutionInterruptedError` when a run is terminated, both `BaseException`s)
releases the claim at once, as `failed` before the send began and `unknown` after, and is
raised again; a `kill -9` leaves it to the ledger's lease and process check.

Kept apart from `sender` (python-telegram-bot and httpx) so that loading the code location, and
everything that only records alerts, does not import the Telegram client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cg_assets.telegram.ledger import AlertLedger, Claim, SignalRef
from cg_assets.telegram.markup import flag_repeat

if TYPE_CHECKING:
    from cg_assets.telegram.sender import SendResult, TelegramSender

TOKEN_SETTING = "TELEGRAM_BOT_TOKEN"
CHAT_SETTING = "TELEGRAM_CHAT_ID"
CAP_SETTING = "ALERT_DAILY_CAP"  # the per-coin daily cap that alerts' suppression reasons cite


OutcomeStatus = Literal["sent", "failed", "unknown", "suppressed", "skipped"]
Render = Callable[[Sequence[SignalRef], Sequence[tuple[SignalRef, str]]], list[str]]


@dataclass(frozen=True)
class Outcome:
    """What `deliver` did with one alert. `skipped`: the key was already sent, in flight, or
    given up after two sends of unknown outcome; `unknown`: sent, but no answer came.
    `permanent`: Telegram refused it in a way no retry mends (a bad chat, a revoked token)."""

    key: str
    coin: str
    status: OutcomeStatus
    reason: str
    message_id: int | None
    text: str
    migrate_to_chat_id: int | None = None
    permanent: bool = False

    @property
    def worth_retrying(self) -> bool:
        """Not delivered (or not known to be) for a reason that may pass: flood control, a
        Telegram outage, a network error. A later claim may send it (flagged if unknown)."""
        return self.status in ("failed", "unknown") and not self.permanent


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
        if record.status != "suppressed":
            return Outcome(key, coin, "skipped", "already sent or in flight", None, record.text)
        return Outcome(key, coin, "suppressed", suppress_reason, None, text)
    if sender is None:
        raise ValueError(f"alert {key!r}: no sender and no suppress_reason")
    claim = ledger.claim(key, coin, signals, chat_id, reply_to=reply_to)
    if not claim.granted:
        status: OutcomeStatus = "suppressed" if claim.record.status == "suppressed" else "skipped"
        return Outcome(key, coin, status, claim.reason, claim.record.message_id, claim.record.text)
    started = time.monotonic()
    sending = False
    try:
        parts = render(claim.fresh, claim.held_back)
        if claim.repeat:
            parts = [flag_repeat(part) for part in parts]
        text = "\n".join(parts)
        if not ledger.mark_sending(claim, text):
            why = "another run took this alert over (this run's claim expired): not sent"
            return Outcome(key, coin, "skipped", why, None, text)
        sending = True
        result = sender.send(
            chat_id,
            parts,
            reply_to=reply_to,
            chat_setting=chat_setting,
            resend_unknown=not claim.repeat,
        )
        return _record(ledger, claim, coin, text, len(parts), result, time.monotonic() - started)
    except BaseException as exc:
        # A bug or an interrupt, anywhere up to the record: release the claim (refused if the
        # outcome was recorded already), then let it surface.
        what = "stopped while sending, delivery unknown" if sending else "stopped before sending"
        error = sender.redact(f"{what}: {type(exc).__name__}" + (f": {exc}" if str(exc) else ""))
        ledger.mark_failed(claim, error, attempts=0, unconfirmed=int(sending))
        raise


def _record(
    ledger: AlertLedger,
    claim: Claim,
    coin: str,
    text: str,
    parts: int,
    result: SendResult,
    elapsed_s: float,
) -> Outcome:
    """Record what Telegram answered; a claim taken over meanwhile is noted, not recorded."""
    key = claim.key
    if result.ok:
        assert result.message_id is not None
        note = "; ".join(filter(None, [_repeat_note(claim.repeat, result), result.note]))
        if result.attempts > parts:
            note = f"sent after {result.attempts} attempts in {elapsed_s:.1f} s: {note}"
        reason = note
        if not ledger.mark_sent(claim, result.message_id, result.attempts, note):
            reason = "; ".join(
                filter(None, ["sent, but another run had taken this alert over", note])
            )
        return Outcome(key, coin, "sent", reason, result.message_id, text)
    ledger.mark_failed(
        claim, result.error, result.attempts, result.message_id, unconfirmed=result.unconfirmed
    )
    status: OutcomeStatus = "unknown" if result.unconfirmed else "failed"
    return Outcome(
        key,
        coin,
        status,
        result.error,
        result.message_id,
        text,
        result.migrate_to_chat_id,
        result.permanent,
    )


def _repeat_note(repeat: bool, result: SendResult) -> str:
    if repeat:
        return "possible repeat: an earlier send's delivery was unknown"
    if result.unconfirmed:
        return "possible repeat: resent after a send without answer"
    return ""
