"""Large-liquidation triggers for the heads-up flow, found in spool events as they arrive.

A coin triggers once per minute, on whichever comes first: a single liquidation of at least
`single_usd`, or the minute's liquidations adding up to `minute_usd`. Minute totals span
sensor ticks (a cascade rarely fits in one batch of segments), so they travel in the sensor's
cursor along with the minutes that already fired; both are trimmed to the last few minutes so
the cursor stays small.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

MINUTE_MS = 60_000
KEEP_MINUTES = 3
LARGEST_FIELDS = ("exchange", "pair", "side", "price", "usd_value", "time")


@dataclass(frozen=True)
class TriggerThresholds:
    single_usd: float = 1_000_000.0
    minute_usd: float = 5_000_000.0

    def __post_init__(self) -> None:
        for name in ("single_usd", "minute_usd"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive USD amount, got {value!r}")


@dataclass(frozen=True)
class Trigger:
    coin: str
    minute: int  # ms, start of the UTC minute of the exchange timestamps
    kind: str  # "single" (one order over the limit) or "minute" (the minute's total)
    usd: float  # the single order's value, or the minute's total so far
    long_usd: float  # liquidated longs in the minute so far
    short_usd: float  # liquidated shorts in the minute so far
    largest: dict  # the largest order seen in the minute so far (a spool event)
    received_at: int  # ms, when the sidecar received the order that crossed the limit

    @property
    def key(self) -> str:
        return f"{self.coin}-{self.minute}"

    @property
    def side(self) -> str:
        """The side being liquidated: long (a long cascade) or short (a short squeeze)."""
        return "long" if self.long_usd >= self.short_usd else "short"


@dataclass
class TriggerState:
    """What a sensor carries from tick to tick: the last segment read, minute totals per coin
    ([long_usd, short_usd, largest event]), and the coin-minutes that already fired."""

    seq: int = -1
    newest: int = 0  # ms, the newest minute seen
    minutes: dict[str, dict[str, list]] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    def to_cursor(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> TriggerState:
        return cls(**json.loads(cursor)) if cursor else cls()


def find_triggers(
    events: Iterable[dict], state: TriggerState, thresholds: TriggerThresholds
) -> list[Trigger]:
    """Triggers among `events` (spool events in receipt order); updates `state`. Events from
    minutes older than the kept window are too late to warn about and are ignored."""
    fired = set(state.fired)
    found: list[Trigger] = []
    for event in events:
        minute = int(event["time"]) // MINUTE_MS * MINUTE_MS
        if minute < state.newest - (KEEP_MINUTES - 1) * MINUTE_MS:
            continue
        state.newest = max(state.newest, minute)
        coin, usd = event["symbol"], float(event["usd_value"])
        totals = state.minutes.setdefault(coin, {}).setdefault(str(minute), [0.0, 0.0, None])
        totals[0 if event["side"] == "long" else 1] += usd
        if totals[2] is None or usd > totals[2]["usd_value"]:
            totals[2] = {k: event[k] for k in LARGEST_FIELDS}
        key = f"{coin}-{minute}"
        if key in fired:
            continue
        if usd >= thresholds.single_usd:
            kind, amount = "single", usd
        elif totals[0] + totals[1] >= thresholds.minute_usd:
            kind, amount = "minute", totals[0] + totals[1]
        else:
            continue
        fired.add(key)
        found.append(
            Trigger(
                coin=coin,
                minute=minute,
                kind=kind,
                usd=amount,
                long_usd=totals[0],
                short_usd=totals[1],
                largest=totals[2],
                received_at=int(event["received_at"]),
            )
        )
    oldest = state.newest - (KEEP_MINUTES - 1) * MINUTE_MS
    state.minutes = {
        coin: kept
        for coin, minutes in state.minutes.items()
        if (kept := {m: t for m, t in minutes.items() if int(m) >= oldest})
    }
    state.fired = sorted(k for k in fired if int(k.rsplit("-", 1)[1]) >= oldest)
    return found
