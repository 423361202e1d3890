"""The Bot API's side of an HTTP exchange as the Telegram stand-in reproduces it: the
`{"ok": ..., "result" | "error_code", "description", "parameters"}` envelope, and request
parameters taken the ways Telegram takes them (query string, urlencoded or multipart form,
JSON), including both styles of naming the message replied to.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from cg_assets.sim.http import Response, json_response


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


def bad_request(detail: str, parameters: dict[str, int] | None = None) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}", parameters)


def ok(result: Any) -> Response:
    return json_response(200, {"ok": True, "result": result})


def request_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Parameters as Telegram takes them: query string, urlencoded or multipart form, or JSON.

    python-telegram-bot posts a form whose non-string values are JSON-encoded strings.
    """
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            raise bad_request("can't parse JSON object") from None
        if not isinstance(decoded, dict):
            raise bad_request("can't parse JSON object")
        params.update(decoded)
    elif kind == "multipart/form-data":
        params.update(_multipart(content_type, body))
    elif body:
        params.update(parse_qsl(body.decode(), keep_blank_values=True))
    return params


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise bad_request("multipart body without a boundary")
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
            raise bad_request(f"can't parse {name} JSON object") from None
    return value


def reply_target(params: dict[str, Any]) -> tuple[int | None, bool]:
    """(message id replied to, allow_sending_without_reply) from either parameter style."""
    allow = str(params.get("allow_sending_without_reply", "")).lower() == "true"
    raw = params.get("reply_parameters")
    if raw:
        reply = _json_field(raw, "reply_parameters")
        if not isinstance(reply, dict) or "message_id" not in reply:
            raise bad_request("message to be replied not specified")
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
        raise bad_request(f"invalid message identifier {value!r}") from None
