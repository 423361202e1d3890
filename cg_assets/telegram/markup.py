"""Telegram's HTML parse mode, in which only `<`, `>` and `&` need escaping: every dynamic
value in any message (market alerts, heads-ups, ops messages) goes through `escape`."""

from __future__ import annotations

import html


def escape(value: object) -> str:
    """Any dynamic value as HTML text: `<`, `>` and `&` become entities."""
    return html.escape(str(value), quote=False)
