"""Telegram's HTML parse mode, in which only `<`, `>` and `&` need escaping: every dynamic
value in any message (market alerts, heads-ups, ops messages) goes through `escape`.

A message that may reach the chat a second time (its first send got no answer, or the run
died while sending it) opens with `REPEAT_NOTICE`, so a reader who sees it twice knows why.
"""

from __future__ import annotations

import html

_REPEAT_WORDS = "Possible repeat: an earlier send of this alert may have arrived."
REPEAT_NOTICE = f"↻ <i>{_REPEAT_WORDS}</i>"
# What the notice adds to a message as Telegram counts it (UTF-16 units of "↻ ", the words
# and the line break): messages that may be long keep this much room below the 4096 limit.
REPEAT_NOTICE_LENGTH = 2 + len(_REPEAT_WORDS) + 1


def escape(value: object) -> str:
    """Any dynamic value as HTML text: `<`, `>` and `&` become entities."""
    return html.escape(str(value), quote=False)


def flag_repeat(text: str) -> str:
    """`text` opened by the possible-repeat notice."""
    return f"{REPEAT_NOTICE}\n{text}"
