"""Switchable failures of the Telegram stand-in, set per instance or through
`POST /_sim/faults`: flood control, a revoked token, a blocked bot, a lost chat, 5xx and slow
answers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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
