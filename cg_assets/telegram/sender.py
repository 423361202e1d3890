"""Sending alerts with python-telegram-bot from synchronous code (assets and sensors).

PTB is async only. `TelegramSender` owns one `asyncio.Runner` (one event loop, one HTTP
connection pool, one `getMe` token check) for its lifetime and exposes a blocking `send`, so an
asset or a sensor sends several messages without re-creating the client per message. It must
not be used from inside a running event loop (Dagster runs sync assets and sensors outside one).

Errors (PTB maps Telegram's answers onto exception classes):
- `RetryAfter` (flood control): wait what Telegram asks, then retry, within `max_wait_s`.
- `TimedOut`, other `NetworkError` (5xx, refused connections): retry with backoff.
- `BadRequest`, `Forbidden`, `InvalidToken`, `ChatMigrated`: permanent. One attempt, then the
  alert fails with a message naming the setting to fix (or the new chat id). `BadRequest` is a
  subclass of `NetworkError`, so it is caught first; a rejected token is remembered so the
  following alerts of the run fail at once instead of each asking Telegram again.

Duplicates after a timeout: the ledger row is claimed before the first attempt and becomes
`sent` only with Telegram's message_id, so no other run re-sends an alert in flight or done,
and a retry stays inside this one claim. What the ledger cannot settle is a read timeout:
Telegram may have delivered the message and only its answer was lost, and the Bot API has no
idempotency key or way to list a bot's own messages. Connect and pool timeouts (nothing was
sent) are retried without that risk. After a read timeout the message is sent once more,
because a lost alert costs more than a repeated one, but flagged as a possible repeat
(`markup.REPEAT_NOTICE`); a second read timeout ends the send as `unconfirmed`, so no message
reaches the chat more than twice. `resend_unknown=False` (a send that is itself the repeat)
allows no such resend. `read_timeout_s` is generous to keep the window small.

Stopping (a terminated run's SIGTERM, Ctrl-C): while a send runs, what the SIGINT or SIGTERM
handler raises (Dagster's raises `DagsterExecutionInterruptedError`) cancels the send and is
raised once the event loop has returned. Raised inside the loop, it could land in an asyncio
callback, such as a socket write, that turns any exception but SystemExit and KeyboardInterrupt
into a connection error: PTB then retried, the message went out and the run ended as a
success, its termination lost (seen in CI).

The token never leaves this module: errors are our own words with the token redacted, and a
logging filter on the `httpx` and `telegram` loggers (which print request URLs, and URLs
contain the token) redacts it while a sender is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

import httpx
from telegram import Bot, LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from cg_assets.settings import DEFAULT_TELEGRAM_API_BASE_URL
from cg_assets.telegram.delivery import CHAT_SETTING, TOKEN_SETTING
from cg_assets.telegram.markup import flag_repeat

REDACTED = "<redacted>"
# Loggers that print request URLs (and so the token) at INFO/DEBUG.
_URL_LOGGERS = ("httpx", "telegram.Bot", "telegram.request")
# What stops a run or a process; deferred out of the event loop while a send runs.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class SendResult:
    """What became of one alert's message(s). `error` is safe to show and store.

    `unconfirmed`: attempts that got no answer after the request went out (Telegram may have
    delivered them); a failed send with any is of unknown delivery, not a plain failure.
    """

    ok: bool
    message_ids: tuple[int, ...]
    attempts: int
    error: str = ""
    permanent: bool = False
    note: str = ""
    migrate_to_chat_id: int | None = None
    unconfirmed: int = 0

    @property
    def message_id(self) -> int | None:
        """The first message's id: what a follow-up replies to."""
        return self.message_ids[0] if self.message_ids else None


class _Redact(logging.Filter):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, REDACTED), None
        return True


class _Permanent(Exception):
    def __init__(self, error: str, migrate_to: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.migrate_to = migrate_to


class TelegramSender:
    """A synchronous python-telegram-bot client: `with TelegramSender(...) as s: s.send(...)`.

    `api_base_url` is TELEGRAM_API_BASE_URL (https://api.telegram.org, or the stand-in).
    `max_attempts` bounds the requests per message part; `max_wait_s` bounds the time spent
    waiting between them (flood control and backoff), so a sensor can keep within its tick.
    `sleep` is awaited for those waits; tests inject one that records instead of waiting.
    """

    def __init__(
        self,
        token: str,
        api_base_url: str = DEFAULT_TELEGRAM_API_BASE_URL,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        max_attempts: int = 4,
        max_wait_s: float = 60.0,
        backoff_s: float = 1.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not token:
            raise ValueError(f"no bot token: set {TOKEN_SETTING}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._token = token
        self.api_base_url = api_base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._runner: asyncio.Runner | None = None
        self._bot: Bot | None = None
        self._ready = False
        self._token_error = ""
        self._filter = _Redact(token)

    def __enter__(self) -> TelegramSender:
        for name in _URL_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self._runner = asyncio.Runner()
        request = HTTPXRequest(
            connection_pool_size=4,
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            write_timeout=self.read_timeout_s,
            pool_timeout=self.connect_timeout_s,
        )
        self._bot = Bot(self._token, base_url=f"{self.api_base_url}/bot", request=request)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._runner is not None and self._bot is not None:
                # Closing the pool of a failed client: nothing left to report.
                with contextlib.suppress(TelegramError):
                    self._runner.run(self._bot.shutdown())
                self._runner.close()
        finally:
            self._runner = self._bot = None
            self._ready = False
            for name in _URL_LOGGERS:
                logging.getLogger(name).removeFilter(self._filter)

    def redact(self, text: str) -> str:
        return text.replace(self._token, REDACTED)

    def send(
        self,
        chat_id: int | str,
        parts: Sequence[str] | str,
        *,
        reply_to: int | None = None,
        chat_setting: str = CHAT_SETTING,
        resend_unknown: bool = True,
    ) -> SendResult:
        """Send `parts` in order as HTML messages; the first replies to `reply_to` if given
        (and is sent anyway if that message is gone). `chat_setting` names the variable the
        chat id came from, for error messages. `resend_unknown`: whether a part whose send got
        no answer may be sent once more, flagged as a possible repeat."""
        if self._runner is None:
            raise RuntimeError("use TelegramSender as a context manager: with sender: ...")
        messages = [parts] if isinstance(parts, str) else list(parts)
        if not messages:
            raise ValueError("nothing to send")
        with _stops_cancel(self._runner.get_loop()):
            return self._runner.run(
                self._send(chat_id, messages, reply_to, chat_setting, resend_unknown)
            )

    async def _send(
        self,
        chat_id: int | str,
        parts: list[str],
        reply_to: int | None,
        chat_setting: str,
        resend_unknown: bool,
    ) -> SendResult:
        ids: list[int] = []
        attempts = 0
        unconfirmed = 0
        unanswered_allowed = 1 if resend_unknown else 0
        notes: list[str] = []
        budget = self.max_wait_s
        for index, text in enumerate(parts):
            label = f"part {index + 1}/{len(parts)}: " if len(parts) > 1 else ""
            tries = 0
            while True:
                tries += 1
                attempts += 1
                try:
                    first = reply_to if index == 0 else None
                    ids.append(await self._post(chat_id, text, first, chat_setting))
                    break
                except _Permanent as exc:
                    return SendResult(
                        False,
                        tuple(ids),
                        attempts,
                        self.redact(label + exc.error),
                        permanent=True,
                        note=self.redact("; ".join(notes)),
                        migrate_to_chat_id=exc.migrate_to,
                        unconfirmed=unconfirmed,
                    )
                except TelegramError as exc:
                    wait, why = self._transient(exc, tries)
                    notes.append(f"attempt {attempts}: {why}")
                    if maybe_delivered(exc):
                        unconfirmed += 1
                        text = flag_repeat(text)  # the resend, if any, is a possible repeat
                stop = self._stop(tries, wait, budget, unconfirmed > unanswered_allowed)
                if stop:
                    return SendResult(
                        False,
                        tuple(ids),
                        attempts,
                        self.redact(f"{label}{stop}; last error: {why}"),
                        note=self.redact("; ".join(notes)),
                        unconfirmed=unconfirmed,
                    )
                budget -= wait
                await self.sleep(wait)
        return SendResult(
            True,
            tuple(ids),
            attempts,
            note=self.redact("; ".join(notes)),
            unconfirmed=unconfirmed,
        )

    async def _post(
        self, chat_id: int | str, text: str, reply_to: int | None, chat_setting: str
    ) -> int:
        """One request; permanent errors become _Permanent, transient ones propagate."""
        assert self._bot is not None
        if self._token_error:
            raise _Permanent(self._token_error)
        try:
            if not self._ready:
                await self._bot.initialize()  # getMe: checks the token once per sender
                self._ready = True
            message = await self._bot.send_message(
                chat_id=chat_id,
                text=text,
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_parameters=None
                if reply_to is None
                else ReplyParameters(message_id=reply_to, allow_sending_without_reply=True),
            )
        except InvalidToken:
            self._token_error = (
                f"Telegram rejected the bot token (401 Unauthorized): set {TOKEN_SETTING} to the"
                " token @BotFather issued for the bot"
            )
            raise _Permanent(self._token_error) from None
        except ChatMigrated as exc:
            raise _Permanent(
                f"chat {chat_id} was upgraded to a supergroup with id {exc.new_chat_id}:"
                f" set {chat_setting}={exc.new_chat_id}",
                exc.new_chat_id,
            ) from None
        except Forbidden as exc:
            raise _Permanent(
                f"Telegram refused to post to chat {chat_id} ({exc.message}): unblock the bot or"
                f" add it to the chat again, or set {chat_setting} to a chat it can post to"
            ) from None
        except BadRequest as exc:
            if "chat not found" in exc.message.lower():
                raise _Permanent(
                    f"chat {chat_id} not found: check {chat_setting} (the bot must be a member"
                    " of the group, or the user must have started a chat with it)"
                ) from None
            raise _Permanent(f"Telegram rejected the message: {exc.message}") from None
        return message.message_id

    def _stop(self, tries: int, wait: float, budget: float, too_many_unanswered: bool) -> str:
        """Why a part is not tried again ('' = try again): a resend could put the message in
        the chat a third time (or a second, when the send is itself a repeat), or the attempts
        or the wait budget ran out."""
        if too_many_unanswered:
            return "no answer from Telegram, delivery unknown: not sent again"
        if tries >= self.max_attempts:
            return f"gave up after {tries} attempts"
        if wait > budget:
            return f"a further wait of {wait:.0f} s exceeds the {self.max_wait_s:.0f} s budget"
        return ""

    def _transient(self, exc: TelegramError, tries: int) -> tuple[float, str]:
        """(seconds to wait before the next try, what happened) for a retryable error."""
        backoff = self.backoff_s * 2 ** (tries - 1)
        if isinstance(exc, RetryAfter):
            wait = _retry_after_seconds(exc)
            return wait, f"flood control, Telegram asked to wait {wait:.0f} s"
        if isinstance(exc, TimedOut):
            if not maybe_delivered(exc):
                return backoff, "timed out before the request was sent"
            return backoff, (
                "timed out waiting for Telegram's answer (the message may have been delivered)"
            )
        if isinstance(exc, NetworkError):
            return backoff, f"network error: {self.redact(exc.message)}"
        return backoff, f"Telegram error: {self.redact(exc.message)}"


@contextlib.contextmanager
def _stops_cancel(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While the block runs `loop`, a stop signal's handler runs as usual, but what it raises
    (or the default action of a signal without a handler) is held: the loop's tasks are
    cancelled, and it is raised (taken) once the block has left the loop. A handler that only
    takes note stops nothing. Signal handlers belong to the main thread; elsewhere the block
    runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[BaseException] = []
    defaulted: list[int] = []
    previous = {stop: signal.getsignal(stop) for stop in _STOP_SIGNALS}

    def on_stop(signum: int, frame: FrameType | None) -> None:
        handler = previous[signum]
        if handler == signal.SIG_IGN or handler is None:
            return
        if callable(handler):
            try:
                handler(signum, frame)
                return
            except BaseException as exc:  # held, and raised once out of the loop
                raised.append(exc)
        else:
            defaulted.append(signum)
        loop.call_soon_threadsafe(_cancel_tasks, loop)

    for stop in _STOP_SIGNALS:
        signal.signal(stop, on_stop)
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, signal.SIG_DFL if handler is None else handler)
        if raised:
            raise raised[0]
        for signum in defaulted:
            signal.raise_signal(signum)


def _cancel_tasks(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


def maybe_delivered(exc: TelegramError) -> bool:
    """Whether a failed request may still have reached the chat: a timeout after it was sent
    (a connect or pool timeout means it never left)."""
    return isinstance(exc, TimedOut) and not isinstance(
        exc.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout
    )


def _retry_after_seconds(exc: RetryAfter) -> float:
    """`retry_after` is an int, or a timedelta with PTB_TIMEDELTA=true (PTB >= 22.2 emits a
    deprecation warning for the int form, from inside RetryAfter itself; setting
    PTB_TIMEDELTA=true opts in to the future type and silences it)."""
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
