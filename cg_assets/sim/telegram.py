"""A Telegram Bot API stand-in: `getMe` and `sendMessage` on loopback, answered like Telegram.

The alert code only knows a base URL (`TELEGRAM_API_BASE_URL`), so tests and the demo point the
real python-telegram-bot client here instead of at api.telegram.org. What it reproduces is
what a sender has to cope with (Bot API docs, "Making requests", "sendMessage", "HTML style"):
the `{"ok": ..., "result" | "error_code", "description", "parameters"}` envelope, 401 for an
unknown token, 400 for an unknown chat, the HTML subset and its parse errors, the 4096-character
limit counted after entity parsing, replies, a group migrated to a supergroup, and switchable
faults (flood control with `retry_after`, 401, 403, 5xx, slow answers). Every accepted message
is recorded, so a test can assert exactly what a user would have seen.

Deliberately stricter than Telegram in one place: a bare `>` is rejected like a bare `<`, so
a formatter that forgets to escape one is caught here rather than by a user.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from email.message import Message
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cg_assets.sim.http import LoopbackServer, Response, faults_endpoint, json_response

DEFAULT_TOKEN = "123456789:STANDIN-not-a-real-token"
DEFAULT_CHAT_ID = 424242
MAX_TEXT_LENGTH = 4096  # characters after entity parsing (telegram.constants.MessageLimit)

_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_INT_ID = re.compile(r"^-?\d+$")

ChatId = int | str


class ApiError(Exception):
    """One Telegram error answer: HTTP status = error_code, plus optional parameters."""

    def __init__(self, code: int, description: str, parameters: dict[str, int] | None = None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def response(self) -> Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return json_response(self.code, body)


def _bad_request(detail: str, parameters: dict[str, int] | None = None) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}", parameters)


# --------------------------------------------------------------------------- HTML parsing

# Tag -> the entity type Telegram reports for it.
_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[^<>]*)?)>")
_ATTR = re.compile(r"""\s*([A-Za-z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});")


def utf16_len(text: str) -> int:
    """Length as Telegram counts offsets: UTF-16 code units (an emoji can count 2)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class ParsedText:
    plain: str
    entities: list[dict[str, Any]]


def parse_html(text: str) -> ParsedText:
    """The text a user sees plus its entities, or ApiError as Telegram words parse errors.

    Offsets in errors are UTF-8 byte offsets, as in Telegram's messages.
    """
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    stack: list[tuple[str, int, dict[str, str]]] = []
    length = 0  # UTF-16 units written so far
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "<":
            match = _TAG.match(text, pos)
            if match is None:
                raise _parse_error(f'Unsupported start tag "" at byte offset {_byte(text, pos)}')
            closing, name, attrs = match.group(1), match.group(2).lower(), match.group(3)
            if closing:
                if not stack:
                    raise _parse_error(f"Unexpected end tag at byte offset {_byte(text, pos)}")
                open_name, start, open_attrs = stack.pop()
                if open_name != name:
                    raise _parse_error(
                        f"Unmatched end tag at byte offset {_byte(text, pos)}, expected"
                        f' "</{open_name}>", found "</{name}>"'
                    )
                entity = _entity(open_name, open_attrs, start, length)
                if entity is not None:
                    entities.append(entity)
            else:
                stack.append((name, length, _tag_attrs(name, attrs, _byte(text, pos))))
            pos = match.end()
        elif char == "&":
            match = _ENTITY.match(text, pos)
            if match is None:
                raise _parse_error(
                    f"Can't find end of the entity starting at byte offset {_byte(text, pos)}"
                )
            decoded = unescape(match.group(0))
            out.append(decoded)
            length += utf16_len(decoded)
            pos = match.end()
        elif char == ">":
            raise _parse_error(f"Unexpected character '>' at byte offset {_byte(text, pos)}")
        else:
            out.append(char)
            length += utf16_len(char)
            pos += 1
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return ParsedText("".join(out), sorted(entities, key=lambda e: (e["offset"], -e["length"])))


def _parse_error(detail: str) -> ApiError:
    return _bad_request(f"can't parse entities: {detail}")


def _byte(text: str, pos: int) -> int:
    return len(text[:pos].encode())


def _tag_attrs(name: str, raw: str, offset: int) -> dict[str, str]:
    span_spoiler = name == "span" and 'class="tg-spoiler"' in raw.replace("'", '"')
    if name not in _ENTITY_TYPES and not span_spoiler:
        raise _parse_error(f'Unsupported start tag "{name}" at byte offset {offset}')
    attrs = {
        m.group(1).lower(): unescape(m.group(2) or m.group(3) or m.group(4) or "")
        for m in _ATTR.finditer(raw)
        if m.group(1)
    }
    if name == "a" and not attrs.get("href"):
        raise _parse_error(f"Can't find href of the link at byte offset {offset}")
    return {"spoiler": "1"} if span_spoiler else attrs


def _entity(name: str, attrs: dict[str, str], start: int, end: int) -> dict[str, Any] | None:
    if end == start:
        return None  # Telegram drops empty entities
    kind = "spoiler" if "spoiler" in attrs else _ENTITY_TYPES[name]
    if kind == "blockquote" and "expandable" in attrs:
        kind = "expandable_blockquote"
    entity: dict[str, Any] = {"type": kind, "offset": start, "length": end - start}
    if kind == "text_link":
        entity["url"] = attrs["href"]
    return entity


# --------------------------------------------------------------------------- faults and records

_COUNT_KNOBS = ("flood", "server_error", "unauthorized", "forbidden", "chat_not_found", "slow")


@dataclass
class TelegramFaults:
    """Faults for the next N requests, each a countdown (0 = off).

    All but `unauthorized` hit `sendMessage` only; `unauthorized` (a revoked token) hits
    every method. `slow` delays the answer by `slow_s`; with `slow_delivers` the message is
    delivered first (Telegram got it, the answer is late: a retry duplicates it), otherwise it
    is dropped and answered 504 after the delay (it never got through).
    """

    flood: int = 0
    retry_after: int = 1
    server_error: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    chat_not_found: int = 0
    slow: int = 0
    slow_s: float = 1.0
    slow_delivers: bool = True
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def take(self, name: str) -> bool:
        """Consume one unit of a countdown fault; whether this request suffers it."""
        with self._lock:
            left = getattr(self, name)
            if left <= 0:
                return False
            setattr(self, name, left - 1)
            return True

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several knobs at once, all or none; ValueError names a bad knob or value."""
        checked = {name: _check_knob(name, value) for name, value in values.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)

    def clear(self) -> None:
        self.update(dict.fromkeys(_COUNT_KNOBS, 0))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


def _check_knob(name: str, value: Any) -> Any:
    known = [f.name for f in fields(TelegramFaults) if f.init]
    if name not in known:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
    if name == "slow_delivers":
        if not isinstance(value, bool):
            raise ValueError(f"slow_delivers must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if name == "slow_s":
        return float(value)
    if int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


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
    client tried. Other processes use `GET /_sim/messages`, `GET|POST /_sim/faults` and
    `POST /_sim/reset`.
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
        super().__init__(host, port)

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
            params = _params(url.query, content_type, body)
            return self._api(match["token"], match["method"], params)
        except ApiError as exc:
            return exc.response()

    def _api(self, token: str, method: str, params: dict[str, Any]) -> Response:
        with self._cond:
            self.requests[method] += 1
        if token not in self.tokens or self.faults.take("unauthorized"):
            raise ApiError(401, "Unauthorized")
        bot_id = _bot_id(token)
        if method.lower() == "getme":
            return _ok(
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
            return _ok(self._send_message(bot_id, params))
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
        parsed = _parse(text, parse_mode)
        if not parsed.plain.strip():
            raise _bad_request("message text is empty")
        if utf16_len(parsed.plain) > MAX_TEXT_LENGTH:
            raise _bad_request("message is too long")
        reply_to, allow_without = _reply_target(params)
        slow = self.faults.take("slow")
        if slow and not self.faults.slow_delivers:
            time.sleep(self.faults.slow_s)
            raise ApiError(504, "Gateway Timeout")
        with self._cond:
            original = self._find(chat, reply_to)
            if reply_to is not None and original is None and not allow_without:
                raise _bad_request("message to be replied not found")
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
            raise _bad_request("chat_id is empty")
        chat = _chat_key(raw)
        with self._cond:
            if chat in self._migrated:
                raise _bad_request(
                    "group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": self._migrated[chat]},
                )
            known = chat in self._chats
        if not known or self.faults.take("chat_not_found"):
            raise _bad_request("chat not found")
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
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return json_response(200, {"ok": True})
        return json_response(404, {"error": "Not Found"})


def _ok(result: Any) -> Response:
    return json_response(200, {"ok": True, "result": result})


def _params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Parameters as Telegram takes them: query string, urlencoded or multipart form, or JSON.

    python-telegram-bot posts a form whose non-string values are JSON-encoded strings.
    """
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            raise _bad_request("can't parse JSON object") from None
        if not isinstance(decoded, dict):
            raise _bad_request("can't parse JSON object")
        params.update(decoded)
    elif kind == "multipart/form-data":
        params.update(_multipart(content_type, body))
    elif body:
        params.update(parse_qsl(body.decode(), keep_blank_values=True))
    return params


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise _bad_request("multipart body without a boundary")
    out: dict[str, str] = {}
    for part in body.split(b"--" + match.group(1).encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if sep and name:
            out[name.group(1).decode()] = value.removesuffix(b"\r\n").decode()
    return out


def _json_field(value: Any, name: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _bad_request(f"can't parse {name} JSON object") from None
    return value


def _reply_target(params: dict[str, Any]) -> tuple[int | None, bool]:
    """(message id replied to, allow_sending_without_reply) from either parameter style."""
    allow = str(params.get("allow_sending_without_reply", "")).lower() == "true"
    raw = params.get("reply_parameters")
    if raw:
        reply = _json_field(raw, "reply_parameters")
        if not isinstance(reply, dict) or "message_id" not in reply:
            raise _bad_request("message to be replied not specified")
        allow = bool(reply.get("allow_sending_without_reply", allow))
        return _message_id(reply["message_id"]), allow
    legacy = params.get("reply_to_message_id")
    if legacy not in (None, ""):
        return _message_id(legacy), allow
    return None, allow


def _message_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad_request(f"invalid message identifier {value!r}") from None


def _parse(text: str, parse_mode: Any) -> ParsedText:
    mode = str(parse_mode or "").lower()
    if mode == "html":
        return parse_html(text)
    if mode in ("", "none"):
        return ParsedText(text, [])
    raise _bad_request(f"unsupported parse_mode {parse_mode!r} (the stand-in knows HTML only)")


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
