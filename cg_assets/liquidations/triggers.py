"""Large-liquidation triggers for the heads-up flow, found in the spool's segment summaries.

A coin triggers once per minute, on whichever comes first: a single liquidation of at least
`single_usd`, or the minute's liquidations adding up to `minute_usd`. The sensor reads
per-segment summaries (`ws_sidecar.summary`: per coin and minute, each side's USD and the
largest order), never the events themselves, so a tick stays cheap at any event rate; a limit
is therefore noticed at the end of the segment that crossed it. Minute totals span sensor ticks
(a cascade rarely fits in one batch of segments), so they travel in the sensor's cursor along
with the minutes that already fired; both are trimmed to the last few minutes so the cursor
stays small.

Orders the live stream missed reach the lake by REST gap fill, in an ingestion run, a minute
or two late. That run records the recent ones' coin-minutes (`gap_filled_minutes`) in its
materialization, and the sensor feeds them through the same rules: a burst seen only by gap
fill still warns, marked late, if it is within the kept minutes; older ones are history.

Nothing in the state may lie after the sensor's clock: a coin-minute stamped later (a bad
timestamp the sidecar let through, or an older segment) is ignored, and a cursor that already
holds one (written before timestamps were validated) is cut back, because a minute in the
future would make every real minute look too old to warn about.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ws_sidecar.summary import MINUTE_MS, CoinMinute, SegmentSummary, Tally

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
    largest: dict  # the largest order seen in the minute so far (LARGEST_FIELDS)
    # ms, when the sidecar received the single order over the limit, or (a minute's total)
    # the earliest order of the segment that crossed it: never later than the crossing.
    # For a burst found by gap fill: when the ingestion run fetched it.
    received_at: int
    gap_filled: bool = False  # found in orders the live stream missed, so late

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
    orders_event: int = 0  # storage id of the last `liquidation_orders` materialization read
    minutes: dict[str, dict[str, list]] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    def to_cursor(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> TriggerState:
        return cls(**json.loads(cursor)) if cursor else cls()

    @property
    def oldest(self) -> int:
        """The oldest minute still worth a warning."""
        return self.newest - (KEEP_MINUTES - 1) * MINUTE_MS

    def keep(self, oldest: int, newest: int) -> None:
        """Forget the minutes, and the fired coin-minutes, outside [oldest, newest]."""
        self.minutes = {
            coin: kept
            for coin, minutes in self.minutes.items()
            if (kept := {m: t for m, t in minutes.items() if oldest <= int(m) <= newest})
        }
        self.fired = sorted(k for k in self.fired if oldest <= _minute_of(k) <= newest)


@dataclass
class Scan:
    """What `find_triggers` found, and how many coin-minutes it ignored for lying after the
    clock (too-late ones are normal and not counted)."""

    triggers: list[Trigger]
    future: int = 0


def find_triggers(
    coin_minutes: Iterable[CoinMinute],
    state: TriggerState,
    thresholds: TriggerThresholds,
    now_ms: int,
) -> Scan:
    """Triggers among segment summaries' coin-minutes (segments in order); updates `state`,
    which never moves past the minute of `now_ms`. Minutes older than the kept window are too
    late to warn about and are ignored."""
    now_minute = now_ms - now_ms % MINUTE_MS
    state.newest = min(state.newest, now_minute)
    state.keep(state.oldest, now_minute)
    fired = set(state.fired)
    scan = Scan([])
    for cm in coin_minutes:
        if cm.minute > now_minute:
            scan.future += 1
            continue
        if cm.minute < state.oldest:
            continue
        state.newest = max(state.newest, cm.minute)
        totals = state.minutes.setdefault(cm.coin, {}).setdefault(str(cm.minute), [0.0, 0.0, None])
        totals[0] += cm.long_usd
        totals[1] += cm.short_usd
        if totals[2] is None or cm.largest["usd_value"] > totals[2]["usd_value"]:
            totals[2] = {k: cm.largest[k] for k in LARGEST_FIELDS}
        key = f"{cm.coin}-{cm.minute}"
        if key in fired:
            continue
        if cm.largest["usd_value"] >= thresholds.single_usd:
            kind, amount, received_at = "single", cm.largest["usd_value"], cm.largest["received_at"]
        elif totals[0] + totals[1] >= thresholds.minute_usd:
            kind, amount, received_at = "minute", totals[0] + totals[1], cm.first_received_at
        else:
            continue
        fired.add(key)
        scan.triggers.append(
            Trigger(
                coin=cm.coin,
                minute=cm.minute,
                kind=kind,
                usd=amount,
                long_usd=totals[0],
                short_usd=totals[1],
                largest=totals[2],
                received_at=received_at,
            )
        )
    state.fired = sorted(fired)
    state.keep(state.oldest, now_minute)
    return scan


def _minute_of(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def gap_filled_minutes(
    events: Iterable[Mapping[str, Any]], live_ids: set[str], now_ms: int
) -> SegmentSummary:
    """The coin-minutes of gap-filled orders recent enough to warn about (within the kept
    minutes of `now_ms`), leaving out orders the live stream also delivered (`live_ids`: a
    gap is re-asked at its edges), so no minute total counts an order twice."""
    oldest = now_ms - now_ms % MINUTE_MS - (KEEP_MINUTES - 1) * MINUTE_MS
    recent = [e for e in events if e["time"] >= oldest and e["event_id"] not in live_ids]
    return Tally().add_events(recent).summary()
