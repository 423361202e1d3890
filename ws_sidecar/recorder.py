"""Between the connection and the spool: messages become records, outages become gap records.

The connection reports three things (a subscription began, a message arrived, a subscribed
connection ended); this turns them into what the spool must hold: the liquidations of each
push, and one gap record per outage, written when the next subscription begins. The first
subscription after a start also closes the gap left by the previous run (from the newest
record it published), so a crash or a redeploy is as visible to the gap filler as a dropped
connection. Pushed items that fail validation go to the quarantine file instead of the spool.
Counters for the health endpoints and throttled log lines are kept here too.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from ws_sidecar.parse import Reject, parse_frame
from ws_sidecar.quarantine import Quarantine
from ws_sidecar.sink import SpoolSink
from ws_sidecar.spool import encode_record, encode_ws_event, gap_record
from ws_sidecar.stats import Stats, Throttle
from ws_sidecar.summary import Tally
from ws_sidecar.validate import DEFAULT_WINDOW, EventWindow

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 10.0
WARNING_INTERVAL_S = 10.0


class Recorder:
    def __init__(
        self,
        sink: SpoolSink,
        stats: Stats,
        gap_margin_ms: int,
        quarantine: Quarantine,
        resume_from_ms: int | None = None,
        window: EventWindow = DEFAULT_WINDOW,
    ) -> None:
        self._sink = sink
        self._stats = stats
        self._margin = gap_margin_ms
        self._quarantine = quarantine
        self._window = window
        # Start of the outage not yet recorded, and why it happened.
        self._gap_start = resume_from_ms
        self._gap_reason = "sidecar was not running"
        # One throttle per kind of complaint, so a flood of one does not hide the others.
        self._warnings = {
            kind: Throttle(WARNING_INTERVAL_S) for kind in ("malformed", "ignored", "rejected")
        }
        self._summary_due = time.monotonic() + SUMMARY_INTERVAL_S
        self._summary_count = 0
        self._summary_largest: dict[str, Any] | None = None

    async def on_subscribed(self, conn_id: str, at_ms: int) -> None:
        if self._gap_start is None:
            return
        start, end = self._gap_start - self._margin, at_ms + self._margin
        log.info(
            "gap recorded: %s to %s (%.1f s, margins included) after %s",
            _iso(start),
            _iso(end),
            (end - start) / 1000,
            self._gap_reason,
        )
        self._gap_start = None
        await self._sink.put([encode_record(gap_record(start, end, self._gap_reason, conn_id))])

    def on_disconnected(self, conn_id: str, reason: str, last_seen_ms: int) -> None:
        if self._gap_start is None:  # an earlier outage still open keeps its earlier start
            self._gap_start = last_seen_ms
            self._gap_reason = f"{conn_id}: {reason}"

    async def on_message(self, message: str | bytes, conn_id: str, received_at: int) -> None:
        frame = parse_frame(message, conn_id, received_at, self._window)
        stats = self._stats
        if frame.kind == "malformed":
            stats.malformed_frames += 1
            count = stats.malformed_frames
            self._warn(
                "malformed", "skipped a malformed frame (%d so far): %s", count, frame.detail
            )
            return
        if frame.kind == "ignored":
            stats.ignored_frames += 1
            self._warn(
                "ignored", "ignored a frame that is not a liquidation push: %s", frame.detail
            )
            return
        if frame.rejects:
            self._reject(frame.rejects, conn_id, received_at)
        events = frame.events
        if not events:
            return
        stats.events_received += len(events)
        newest = max(e["time"] for e in events)
        if stats.last_event_time is None or newest > stats.last_event_time:
            stats.last_event_time = newest
        self._summarize(events)
        raw_texts = frame.raw_texts or [None] * len(events)
        await self._sink.put(
            list(map(encode_ws_event, events, raw_texts)), Tally().add_events(events)
        )

    def _reject(self, rejects: list[Reject], conn_id: str, received_at: int) -> None:
        stats = self._stats
        stats.quarantined_items += len(rejects)
        stats.malformed_items += sum(r.malformed for r in rejects)
        self._quarantine.add(rejects, received_at, conn_id)
        self._sink.note_quarantined(len(rejects))
        self._warn(
            "rejected",
            "quarantined %d item(s) (%d so far) in %s: %s",
            len(rejects),
            stats.quarantined_items,
            self._quarantine.path,
            rejects[0].reason,
        )

    def _warn(self, kind: str, message: str, *args: object) -> None:
        if self._warnings[kind].ready():
            log.warning(message, *args)

    def _summarize(self, events: list[dict[str, Any]]) -> None:
        """Every SUMMARY_INTERVAL_S: how many events arrived and the largest of them."""
        self._summary_count += len(events)
        largest = max(events, key=_usd)
        if self._summary_largest is None or _usd(largest) > _usd(self._summary_largest):
            self._summary_largest = largest
        now = time.monotonic()
        if now < self._summary_due:
            return
        e = self._summary_largest
        log.info(
            "%d events in %.0f s, largest from %s %s $%s (%s liquidated)",
            self._summary_count,
            now - self._summary_due + SUMMARY_INTERVAL_S,
            e["exchange"],
            e["pair"],
            f"{e['usd_value']:,.0f}",
            e["side"],
        )
        self._summary_due = now + SUMMARY_INTERVAL_S
        self._summary_count = 0
        self._summary_largest = None


def _usd(event: dict[str, Any]) -> float:
    return event["usd_value"]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
