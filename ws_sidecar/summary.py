"""Per-segment summaries: what the heads-up triggers need from a segment, without its events.

The heads-up sensor runs inside the Dagster daemon every few seconds. Parsing every event of
every new segment there costs seconds a tick at 50,000 events/s, so when the sidecar seals a
segment it also writes `seg-{seq:012d}.summary.json` beside it (`ws_sidecar.spool` owns the
file; docs/CONTRACTS.md has the format). Per coin and minute of the exchange's timestamps it
holds the USD liquidated and the number of orders on each side, the largest order and when
the first order was received; per segment, the counts and the time bounds.

The sidecar tallies each pushed frame's events as they arrive (`Tally`), and merges the
tallies of a segment's frames when it seals the segment, so nothing per event waits in memory
for the disk. A segment without a usable summary (written before summaries existed, or whose
summary a crash lost) is summarised from its events by the same code (`summarize`), so
readers see one shape either way. Loading validates every field, so a damaged summary is
treated as missing rather than trusted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ws_sidecar.validate import (
    event_problem,
    gap_problem,
    is_amount,
    is_millis,
    is_text,
    order_problem,
)

VERSION = 1
MINUTE_MS = 60_000
LARGEST_FIELDS = ("exchange", "pair", "side", "price", "usd_value", "time", "received_at")


@dataclass(frozen=True)
class CoinMinute:
    """One coin's liquidations within one minute, as far as one segment holds them."""

    coin: str
    minute: int  # ms, start of the UTC minute of the exchange timestamps
    long_usd: float
    short_usd: float
    long_count: int
    short_count: int
    first_received_at: int  # ms, receipt of the earliest of these orders
    largest: dict[str, Any]  # LARGEST_FIELDS of the largest of these orders


@dataclass(frozen=True)
class SegmentSummary:
    """A segment in brief. `quarantined` counts the items the sidecar rejected while the
    segment's records arrived; `skipped` the segment's own records that are not usable (only a
    summary computed from the segment by a reader can find any)."""

    events: int = 0
    gaps: int = 0
    quarantined: int = 0
    skipped: int = 0
    time_min: int | None = None  # ms, over event times, receipt times and gap bounds
    time_max: int | None = None
    coin_minutes: tuple[CoinMinute, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, separators=(",", ":"))


class Tally:
    """A summary in the making: usable events and gaps added in receipt order, tallies of
    consecutive parts of a segment merged in order."""

    __slots__ = ("events", "gaps", "groups", "hi", "lo", "skipped")

    def __init__(self) -> None:
        self.events = 0
        self.gaps = 0
        self.skipped = 0
        self.lo: float = math.inf
        self.hi: float = -math.inf
        # (coin, minute) -> [long_usd, short_usd, long_count, short_count, first receipt,
        # largest event], in the order of their first event.
        self.groups: dict[tuple[str, int], list[Any]] = {}

    def add_events(self, events: Iterable[Mapping[str, Any]]) -> Tally:
        """Add usable spool events (or anything with their fields); runs for every event the
        sidecar receives, hence the plain loop."""
        groups, lo, hi = self.groups, self.lo, self.hi
        for event in events:
            time_ms, received, usd = event["time"], event["received_at"], event["usd_value"]
            self.events += 1
            # Bounds by comparison, not min()/max(): no call per event.
            if time_ms < lo:
                lo = time_ms
            if time_ms > hi:
                hi = time_ms
            if received < lo:
                lo = received
            if received > hi:
                hi = received
            key = (event["symbol"], time_ms - time_ms % MINUTE_MS)
            group = groups.get(key)
            if group is None:
                group = groups[key] = [0.0, 0.0, 0, 0, received, event]
            if event["side"] == "long":
                group[0] += usd
                group[2] += 1
            else:
                group[1] += usd
                group[3] += 1
            if usd > group[5]["usd_value"]:
                group[5] = event
            if received < group[4]:
                group[4] = received
        self.lo, self.hi = lo, hi
        return self

    def add_gap(self, start: int, end: int) -> Tally:
        self.gaps += 1
        self.lo, self.hi = min(self.lo, start), max(self.hi, end)
        return self

    def add_lines(self, lines: Iterable[str]) -> Tally:
        """Add encoded spool lines, reading each: for records that came without a tally (gap
        records, which are rare, and the pieces of a frame split between two segments)."""
        for line in lines:
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            kind = record.get("kind") if isinstance(record, dict) else None
            if kind == "gap" and gap_problem(record) is None:
                self.add_gap(record["start"], record["end"])
            elif kind == "event" and event_problem(record) is None:
                self.add_events([record])
            else:
                self.skipped += 1
        return self

    def merge(self, later: Tally) -> Tally:
        """Add the tally of the records that came after this one's."""
        self.events += later.events
        self.gaps += later.gaps
        self.skipped += later.skipped
        self.lo, self.hi = min(self.lo, later.lo), max(self.hi, later.hi)
        for key, (long_usd, short_usd, longs, shorts, first, largest) in later.groups.items():
            group = self.groups.get(key)
            if group is None:
                self.groups[key] = [long_usd, short_usd, longs, shorts, first, largest]
                continue
            group[0] += long_usd
            group[1] += short_usd
            group[2] += longs
            group[3] += shorts
            group[4] = min(group[4], first)
            if largest["usd_value"] > group[5]["usd_value"]:
                group[5] = largest
        return self

    def summary(self, quarantined: int = 0) -> SegmentSummary:
        """Coin-minutes come in the order their first order was received."""
        coin_minutes = tuple(
            CoinMinute(coin, minute, g[0], g[1], g[2], g[3], g[4],
                       {k: g[5][k] for k in LARGEST_FIELDS})
            for (coin, minute), g in sorted(self.groups.items(), key=lambda kv: (kv[1][4], kv[0]))
        )  # fmt: skip
        bounded = self.events + self.gaps > 0
        return SegmentSummary(
            events=self.events,
            gaps=self.gaps,
            quarantined=quarantined,
            skipped=self.skipped,
            time_min=int(self.lo) if bounded else None,
            time_max=int(self.hi) if bounded else None,
            coin_minutes=coin_minutes,
        )


def summarize(
    events: Iterable[Mapping[str, Any]],
    gaps: Iterable[tuple[int, int]] = (),
    quarantined: int = 0,
    skipped: int = 0,
) -> SegmentSummary:
    """The summary of a segment's usable events (in receipt order) and gaps (start, end)."""
    tally = Tally().add_events(events)
    for start, end in gaps:
        tally.add_gap(start, end)
    tally.skipped = skipped
    return tally.summary(quarantined)


def parse_summary(text: str | bytes) -> SegmentSummary:
    """A summary file's contents; ValueError naming the problem if any field is unusable."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} segment summary")
    counts = [doc.get(k) for k in ("events", "gaps", "quarantined", "skipped")]
    if not all(type(c) is int and c >= 0 for c in counts):
        raise ValueError(f"counts must be integers >= 0, got {counts!r}")
    bounds = (doc.get("time_min"), doc.get("time_max"))
    if bounds != (None, None) and not (
        is_millis(bounds[0]) and is_millis(bounds[1]) and bounds[0] <= bounds[1]
    ):
        raise ValueError(f"time bounds must be epoch milliseconds, got {bounds!r}")
    groups = doc.get("coin_minutes")
    if not isinstance(groups, list):
        raise ValueError("coin_minutes must be a list")
    return SegmentSummary(*counts, *bounds, tuple(_coin_minute(g) for g in groups))


def _coin_minute(doc: Any) -> CoinMinute:
    if not isinstance(doc, dict) or set(doc) != set(CoinMinute.__dataclass_fields__):
        raise ValueError(f"not a coin-minute: {str(doc)[:200]}")
    problem = _coin_minute_problem(doc)
    if problem:
        raise ValueError(f"coin-minute {doc['coin']!r} {doc['minute']!r}: {problem}")
    largest = doc["largest"]
    return CoinMinute(**{**doc, "largest": {k: largest[k] for k in LARGEST_FIELDS}})


def _coin_minute_problem(doc: dict[str, Any]) -> str | None:
    if not is_text(doc["coin"]):
        return "coin must be a non-empty string"
    if not (is_millis(doc["minute"]) and doc["minute"] % MINUTE_MS == 0):
        return "minute must be the epoch milliseconds of a minute's start"
    counts = (doc["long_count"], doc["short_count"])
    if not all(type(c) is int and c >= 0 for c in counts) or sum(counts) == 0:
        return f"counts must be integers >= 0, not both 0, got {counts!r}"
    for name in ("long_usd", "short_usd"):
        value = doc[name]
        if not (is_amount(value) or (type(value) in (int, float) and value == 0)):
            return f"{name} must be a finite number >= 0, got {value!r}"
    if not is_millis(doc["first_received_at"]):
        return f"first_received_at must be epoch milliseconds, got {doc['first_received_at']!r}"
    largest = doc["largest"]
    if not isinstance(largest, dict):
        return "largest must be an object"
    return order_problem(largest)
