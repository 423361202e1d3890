"""What makes a spool record usable, decided in one place for the sidecar and for every reader.

The sidecar checks each liquidation before it reaches the spool, and the readers (the ingestion
run, both Dagster sensors) check again, because they must survive whatever is already on disk:
segments from older versions, a corrupted line, a file written by hand. Whatever passes is safe
for them: names are non-empty strings, side is long or short, price and USD value are finite
and positive, and times are integer milliseconds that `datetime` can represent.

The one judgement call is time. An exchange's timestamp trails its receipt by a delivery delay
and may lead it by a little clock skew; a timestamp in microseconds or seconds, or from a
broken clock, is off by years. The sidecar accepts `time` within a configurable window of its
receipt (`SIDECAR_EVENT_MAX_LAG_S` before, `SIDECAR_EVENT_MAX_LEAD_S` after); readers apply
`READER_WINDOW`, the widest window the sidecar may be configured with, so they never reject an
event a sidecar accepted.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# 9999-12-31T23:59:59.999Z: the last millisecond `datetime` can hold.
MAX_MS = 253_402_300_799_999
SIDES = ("long", "short")
SOURCES = ("ws", "rest")
MAX_WINDOW_S = 86_400
_NUMBERS = (int, float)
_MAX_FLOAT = sys.float_info.max


@dataclass(frozen=True, slots=True)
class EventWindow:
    """How long before (`lag_ms`) or after (`lead_ms`) its receipt an event may be stamped."""

    lag_ms: int = 3_600_000
    lead_ms: int = 300_000

    def problem(self, time_ms: int, received_at: int) -> str | None:
        """Why `time_ms` is implausible for an event received at `received_at`, or None."""
        if received_at - self.lag_ms <= time_ms <= received_at + self.lead_ms:
            return None
        return (
            f"time {time_ms} is outside its receipt time {received_at} minus {self.lag_ms // 1000}"
            f" s to plus {self.lead_ms // 1000} s"
        )


DEFAULT_WINDOW = EventWindow()
READER_WINDOW = EventWindow(MAX_WINDOW_S * 1000, MAX_WINDOW_S * 1000)


def is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def is_amount(value: Any) -> bool:
    """A number > 0 that is a finite float (bools are not numbers here; NaN fails too)."""
    return type(value) in _NUMBERS and 0 < value <= _MAX_FLOAT


def is_millis(value: Any) -> bool:
    """An integer millisecond timestamp after the epoch that `datetime` can represent."""
    return type(value) is int and 0 < value <= MAX_MS


def order_problem(record: Mapping[str, Any]) -> str | None:
    """Why the order fields of `record` (exchange, pair, side, price, usd_value, time,
    received_at) are unusable, naming the field and its value; None if they are usable."""
    for name in ("exchange", "pair"):
        if not is_text(record.get(name)):
            return f"{name} must be a non-empty string, got {record.get(name)!r}"
    if record.get("side") not in SIDES:
        return f"side must be 'long' or 'short', got {record.get('side')!r}"
    for name in ("price", "usd_value"):
        if not is_amount(record.get(name)):
            return f"{name} must be a finite number > 0, got {record.get(name)!r}"
    for name in ("time", "received_at"):
        if not is_millis(record.get(name)):
            return (
                f"{name} must be integer epoch milliseconds before the year 10000,"
                f" got {record.get(name)!r}"
            )
    return None


def event_problem(record: Mapping[str, Any], window: EventWindow = READER_WINDOW) -> str | None:
    """Why a spool event record is unusable, naming the field and its value; None if usable.

    Readers check millions of records a run, so a usable one passes one expression; the
    field-by-field search for the reason runs only once a record has failed it."""
    try:
        t, received = record["time"], record["received_at"]
        if (
            type(t) is int
            and type(received) is int
            and 0 < t <= MAX_MS
            and 0 < received <= MAX_MS
            and received - window.lag_ms <= t <= received + window.lead_ms
            and record["side"] in SIDES
            and record["source"] in SOURCES
            and type(p := record["price"]) in _NUMBERS
            and 0 < p <= _MAX_FLOAT
            and type(u := record["usd_value"]) in _NUMBERS
            and 0 < u <= _MAX_FLOAT
            and type(a := record["event_id"]) is str
            and type(b := record["symbol"]) is str
            and type(c := record["exchange"]) is str
            and type(d := record["pair"]) is str
            and a
            and b
            and c
            and d
        ):
            return None
    except (KeyError, TypeError):
        pass
    return _event_reason(record, window)


def _event_reason(record: Mapping[str, Any], window: EventWindow) -> str:
    for name in ("event_id", "symbol"):
        if not is_text(record.get(name)):
            return f"{name} must be a non-empty string, got {record.get(name)!r}"
    if record.get("source") not in SOURCES:
        return f"source must be 'ws' or 'rest', got {record.get('source')!r}"
    problem = order_problem(record) or window.problem(record["time"], record["received_at"])
    return problem or f"unusable event {record!r}"


def gap_problem(record: Mapping[str, Any]) -> str | None:
    """Why a spool gap record is unusable; None if it is usable."""
    start, end = record.get("start"), record.get("end")
    if not (is_millis(start) and is_millis(end) and start <= end):
        return f"a gap needs epoch milliseconds start <= end, got {start!r} and {end!r}"
    return None
