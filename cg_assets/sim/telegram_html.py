"""Telegram's HTML message formatting as the stand-in enforces it: the supported tag subset,
entities with UTF-16 offsets, and parse errors worded (with UTF-8 byte offsets) as Telegram
words them.

Deliberately stricter than Telegram in one place: a bare `>` is rejected like a bare `<`, so
a formatter that forgets to escape one is caught here rather than by a user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from typing import Any

from cg_assets.sim.telegram_api import ApiError, bad_request

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
    return bad_request(f"can't parse entities: {detail}")


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


def parse_text(text: str, parse_mode: Any) -> ParsedText:
    """The text a user sees under `parse_mode`. Only HTML can be checked here, so any other
    mode is refused rather than delivered unchecked."""
    mode = str(parse_mode or "").lower()
    if mode == "html":
        return parse_html(text)
    if mode in ("", "none"):
        return ParsedText(text, [])
    raise bad_request(f"unsupported parse_mode {parse_mode!r} (the stand-in knows HTML only)")
