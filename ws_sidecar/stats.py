"""Counters and state the connection and the spool update and the health endpoints report,
and a throttle for log lines that could otherwise repeat many times a second.

Only the event loop thread touches them (the disk thread's results are applied after its
`await` returns), so plain attributes need no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Stats:
    started_at: int = field(default_factory=now_ms)
    connected: bool = False
    subscribed: bool = False
    # When `connected` last changed (ms), so "disconnected since" is as visible as uptime.
    since: int = field(default_factory=now_ms)
    last_pong: int | None = None
    events_received: int = 0
    events_written: int = 0
    segments_written: int = 0
    last_seq: int = -1
    # Segments copied to the shared store (`ws_sidecar.publish`; -1: none, or no store).
    segments_published: int = 0
    last_published_seq: int = -1
    reconnects: int = 0
    # The newest liquidation time received (ms).
    last_event_time: int | None = None
    malformed_frames: int = 0
    # Pushed items written to the quarantine file; `malformed_items` of them lacked a
    # liquidation's fields altogether, the rest had implausible values.
    quarantined_items: int = 0
    malformed_items: int = 0
    ignored_frames: int = 0
    backpressure_s: float = 0.0


class Throttle:
    """Lets a repetitive log line through at most once per interval."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True
