"""What the WebSocket simulator counts and records as it serves, for tests and benchmarks to
assert on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SentFrame:
    """A well-formed push as it left the server (recorded only with `record_sent=True`)."""

    conn_id: int
    channel: str
    sent_at_ms: int
    seq: np.ndarray  # feed seqs of its events
    time: np.ndarray  # their event times, ms


@dataclass
class WsStats:
    """Counters kept by the server's loop thread (the only writer); read them from anywhere.

    `events_sent` counts events in well-formed frames only, bar `poisoned_events` (sent with a
    poisoned timestamp, `WsFaults.poison_next`); `frames_sent` counts every frame,
    malformed ones included (also counted in `malformed_frames`). `connections` counts accepted
    connections, `rejected` those closed for their key or plan, `subscriptions` channels newly
    subscribed, `pings` plain-text pings received and `pongs` those answered, `ticks` pushes.
    """

    frames_sent: int = 0
    events_sent: int = 0
    poisoned_events: int = 0
    malformed_frames: int = 0
    connections: int = 0
    rejected: int = 0
    subscriptions: int = 0
    pings: int = 0
    pongs: int = 0
    ticks: int = 0
    sent: list[SentFrame] = field(default_factory=list)

    def reset(self) -> None:
        """Zero in place, so references held by tests stay live."""
        for name, value in WsStats().__dict__.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "sent"}
