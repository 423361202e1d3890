"""A Telegram Bot API stand-in: `getMe` and `sendMessage` on loopback, answered like Telegram.

The alert code only knows a base URL (`TELEGRAM_API_BASE_URL`), so tests and the demo point the
real python-telegram-bot client here instead of at api.telegram.org. What it reproduces is
what a sender has to cope with (Bot API docs, "Making requests", "sendMessage", "HTML style"):
the `{"ok": ..., "result" | "error_code", "description", "parameters"}` envelope, 401 for an
unknown token, 400 for an unknown chat, the HTML subset and its parse errors, the 4096-character
limit counted after entity parsing, replies, a group migrated to a supergroup, and switchable
faults (flood control with `retry_after`, 401, 403, 5xx, slow answers). Every accepted message
is recorded, so a test can assert exactly what a user would have seen.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from cg_assets.sim.http import LoopbackServer, Response, faults_endpoint, json_response
from cg_assets.sim.telegram_api import ApiError, bad_request, ok, reply_target, request_params
from cg_assets.sim.telegram_faults import TelegramFaults
from cg_assets.sim.telegram_html import ParsedText, parse_text, utf16_len

DEFAULT_TOKEN = "123456789:STANDIN-not-a-real-token"
DEFAULT_CHAT_ID = 424242
MAX_TEXT_LENGTH = 4096  # characters after entity parsing (telegram.constants.MessageLimit)

_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_INT_ID = re.compile(r"^-?\d+$")

ChatId = int | str


@dataclass(frozen=True)
class ReceivedMessage:
    """One delivered message as the stand-in recorded it (no token: only the bot's id)."""

    chat_id: ChatId
    message_id: int
    text: str  # as sent, markup included
    plain: str  # what the user reads
    parse_mode: str | None
    reply_to: int | None
    received_at: float  # wall clock, seconds
    bot_id: int

    def render(self) -> str:
        """Readable console form for the demo."""
        at = datetime.fromtimestamp(self.received_at, UTC).strftime("%H:%M:%S")
        reply = f" · reply to {self.reply_to}" if self.reply_to else ""
        head = f"── telegram {at} UTC · chat {self.chat_id} · message {self.message_id}{reply} ──"
        return f"{head}\n{self.plain}\n"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the server


def _chat_key(value: Any) -> ChatId:
    text = str(value).strip()
    return int(text) if _INT_ID.match(text) else text


def _bot_id(token: str) -> int:
    head = token.split(":", 1)[0]
    return int(head) if head.isdigit() else abs(hash(token)) % 10**9


class TelegramServer(LoopbackServer):
    """The Bot API on a local ephemeral port (base URL = what TELEGRAM_API_BASE_URL takes).

    `tokens` are the valid bot tokens, `chats` the chat ids the bot may post to (ints, or
    "@channel" names); anything else is answered as Telegram would. `on_message` is called
    (from the server thread) for every delivered message, e.g. to print it. `requests` counts
    every call per Bot API method, rejected ones included, so tests can assert how often a
    client tried. Other processes use `GET /_sim/messages`, `GET|POST /_sim/faults`,
    `POST /_sim/outage` (`{"seconds": s}`, see `outage`) and `POST /_sim/reset`.
    """

    label = "the Telegram stand-in"

    def __init__(
        self,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        chats: Iterable[ChatId] = (DEFAULT_CHAT_ID,),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        self.tokens = set(tokens)
        self.clock = clock
        self.on_message = on_message
        self.faults = TelegramFaults()
        self.requests: Counter[str] = Counter()
        self._chats: set[ChatId] = {_chat_key(c) for c in chats}
        self._migrated: dict[ChatId, int] = {}
        self._messages: list[ReceivedMessage] = []
        self._next_id: Counter[ChatId] = Counter()
        self._cond = threading.Condition()
        self._down_until = 0.0  # `clock` seconds
        super().__init__(host, port)

    def outage(self, seconds: float) -> None:
        """For the next `seconds`, answer every Bot API request 502 Bad Gateway, as Telegram's
        front end does while its servers are down; nothing sent meanwhile is delivered."""
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._down_until = self.clock() + seconds

    # ------------------------------------------------------------------ chats and records

    def add_chat(self, chat_id: ChatId) -> None:
        with self._cond:
            self._chats.add(_chat_key(chat_id))

    def migrate_chat(self, old: int, new: int) -> None:
        """The group `old` became supergroup `new`: posts to `old` now fail with ChatMigrated."""
        with self._cond:
            self._chats.discard(old)
            self._chats.add(new)
            self._migrated[old] = new

    def messages(self, chat_id: ChatId | None = None) -> list[ReceivedMessage]:
        with self._cond:
            return [m for m in self._messages if chat_id is None or m.chat_id == _chat_key(chat_id)]

    def wait_for_messages(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMessage]:
        """At least `count` messages, waiting up to `timeout_s`; TimeoutError names the gap."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._messages)} message(s) after {timeout_s:.1f}s, wanted {count}"
                    )
                self._cond.wait(left)
            return list(self._messages)

    def reset(self) -> None:
        """Forget messages and counters, switch faults off (chats and tokens stay)."""
        with self._cond:
            self._messages.clear()
            self.requests.clear()
        self.faults.clear()

    # ------------------------------------------------------------------ request handling

    def handle_http(self, method: str, target: str, headers: Message, body: bytes) -> Response:
        return self.handle(method, target, headers.get("Content-Type", ""), body)

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> Response:
        url = urlsplit(target)
        if url.path.startswith("/_sim/"):
            return self._admin(method, url.path, body)
        match = _PATH.match(url.path)
        if match is None:
            return ApiError(404, "Not Found").response()
        try:
            params = request_params(url.query, content_type, body)
            return self._api(match["token"], match["method"], params)
        except ApiError as exc:
            return exc.response()

    def _api(self, token: str, method: str, params: dict[str, Any]) -> Response:
        with self._cond:
            self.requests[method] += 1
        if self.clock() < self._down_until:
            raise ApiError(502, "Bad Gateway")
        if token not in self.tokens or self.faults.take("unauthorized"):
            raise ApiError(401, "Unauthorized")
        bot_id = _bot_id(token)
        if method.lower() == "getme":
            return ok(
                {
                    "id": bot_id,
                    "is_bot": True,
                    "first_name": "cg-pipeline stand-in",
                    "username": "cg_pipeline_standin_bot",
                    "can_join_groups": True,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                }
            )
        if method.lower() == "sendmessage":
            return ok(self._send_message(bot_id, params))
        raise ApiError(404, "Not Found")

    def _send_message(self, bot_id: int, params: dict[str, Any]) -> dict[str, Any]:
        if self.faults.take("flood"):
            wait = self.faults.retry_after
            raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        if self.faults.take("server_error"):
            raise ApiError(500, "Internal Server Error")
        chat = self._chat(params.get("chat_id"))
        if self.faults.take("forbidden"):
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        text = str(params.get("text") or "")
        parse_mode = params.get("parse_mode") or None
        parsed = parse_text(text, parse_mode)
        if not parsed.plain.strip():
            raise bad_request("message text is empty")
        if utf16_len(parsed.plain) > MAX_TEXT_LENGTH:
            raise bad_request("message is too long")
        reply_to, allow_without = reply_target(params)
        slow = self.faults.take("slow")
        if slow and not self.faults.slow_delivers:
            time.sleep(self.faults.slow_s)
            raise ApiError(504, "Gateway Timeout")
        with self._cond:
            original = self._find(chat, reply_to)
            if reply_to is not None and original is None and not allow_without:
                raise bad_request("message to be replied not found")
            self._next_id[chat] += 1
            record = ReceivedMessage(
                chat_id=chat,
                message_id=self._next_id[chat],
                text=text,
                plain=parsed.plain,
                parse_mode=parse_mode,
                reply_to=original.message_id if original else None,
                received_at=self.clock(),
                bot_id=bot_id,
            )
            self._messages.append(record)
            self._cond.notify_all()
        if self.on_message is not None:
            self.on_message(record)
        if slow:
            time.sleep(self.faults.slow_s)  # delivered; only the answer is late
        return _message_json(record, parsed, bot_id, original)

    def _chat(self, raw: Any) -> ChatId:
        if raw is None or str(raw).strip() == "":
            raise bad_request("chat_id is empty")
        chat = _chat_key(raw)
        with self._cond:
            if chat in self._migrated:
                raise bad_request(
                    "group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": self._migrated[chat]},
                )
            known = chat in self._chats
        if not known or self.faults.take("chat_not_found"):
            raise bad_request("chat not found")
        return chat

    def _find(self, chat: ChatId, message_id: int | None) -> ReceivedMessage | None:
        if message_id is None:
            return None
        for message in self._messages:
            if message.chat_id == chat and message.message_id == message_id:
                return message
        return None

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        """Out-of-process control for the demo and benchmarks: faults and the message record."""
        if path == "/_sim/faults" and method in ("GET", "POST"):
            return faults_endpoint(self.faults, method, body)
        if path == "/_sim/messages" and method == "GET":
            return json_response(200, [m.as_dict() for m in self.messages()])
        if path == "/_sim/outage" and method == "POST":
            try:
                request = json.loads(body or b"{}")
                seconds = request.get("seconds") if isinstance(request, dict) else None
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise ValueError(f'expected {{"seconds": <number>}}, got {request!r}')
                self.outage(seconds)
            except ValueError as exc:
                return json_response(400, {"error": str(exc)})
            return json_response(200, {"seconds": seconds})
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return json_response(200, {"ok": True})
        return json_response(404, {"error": "Not Found"})


def _chat_json(chat: ChatId) -> dict[str, Any]:
    """A Chat object; the type follows Telegram's id ranges (groups < 0, supergroups -100...)."""
    if isinstance(chat, str):
        return {"id": -1001000000001, "type": "channel", "username": chat.lstrip("@")}
    if chat < 0:
        kind = "supergroup" if str(chat).startswith("-100") else "group"
        return {"id": chat, "type": kind, "title": f"chat {chat}"}
    return {"id": chat, "type": "private", "first_name": "Alert reader"}


def _message_json(
    record: ReceivedMessage,
    parsed: ParsedText,
    bot_id: int,
    original: ReceivedMessage | None,
) -> dict[str, Any]:
    chat_json = _chat_json(record.chat_id)
    message: dict[str, Any] = {
        "message_id": record.message_id,
        "from": {"id": bot_id, "is_bot": True, "first_name": "cg-pipeline stand-in"},
        "chat": chat_json,
        "date": int(record.received_at),
        "text": record.plain,
    }
    if parsed.entities:
        message["entities"] = parsed.entities
    if original is not None:
        message["reply_to_message"] = {
            "message_id": original.message_id,
            "from": message["from"],
            "chat": chat_json,
            "date": int(original.received_at),
            "text": original.plain,
        }
    return message
