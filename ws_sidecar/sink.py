"""The bounded hand-off between the socket reader and the disk: the asyncio side of the spool.

The reader `put`s each frame's records (encoded spool lines); one task takes them in
segment-sized pieces (at most `max_events`, or whatever arrived within `max_age_s` of the
oldest waiting record) and has a worker thread publish them, so the event loop keeps reading
while the disk works. If the disk falls behind and `queue_max_events` records are waiting,
`put` blocks: the reader stops reading the socket (TCP pushes back on the server) and says so
at ERROR, instead of growing memory or dropping events. A failing disk is retried without
losing the records. Events count as written only once their segment is renamed into place.

Each segment goes out with its summary (`ws_sidecar.summary`): the tallies the recorder hands
over with each frame's lines, merged, so no line is parsed again (only the rare records that
came without one: gap records, and the two pieces of a frame split between segments). The
summary also carries how many pushed items were quarantined since the previous segment, which
is how that count reaches the ingestion runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

from ws_sidecar.spool import GAP_PREFIX, SpoolWriter
from ws_sidecar.stats import Stats, Throttle
from ws_sidecar.summary import SegmentSummary, Tally

# A segment's records as they were queued: each piece with its tally, or None to read them.
Pieces = list[tuple[list[str], Tally | None]]

log = logging.getLogger(__name__)

_RETRY_S = (0.5, 1.0, 2.0, 5.0)
ALARM_INTERVAL_S = 10.0
LONG_PAUSE_S = 1.0


class SpoolSink:
    """Queue (bounded by `queue_max_events`, give or take one frame) plus segment roller."""

    def __init__(
        self,
        writer: SpoolWriter,
        stats: Stats,
        max_events: int = 5000,
        max_age_s: float = 1.0,
        queue_max_events: int = 100_000,
        on_segment: Callable[[], None] | None = None,
    ) -> None:
        self._writer = writer
        # Told of each durable segment (the publisher, when a shared store is configured).
        self._on_segment = on_segment
        self._stats = stats
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._limit = queue_max_events
        # (arrival time on the monotonic clock, records, their tally) in arrival order.
        self._batches: deque[tuple[float, list[str], Tally | None]] = deque()
        self._queued = 0
        self._quarantined = 0  # items quarantined since the last segment was taken
        self._in_flight_since: float | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._closing = False
        self.blocked = False
        self._pauses = 0
        # A disk that is just too slow fills the queue many times a second: say so every
        # ALARM_INTERVAL_S, with totals, rather than every time.
        self._alarm = Throttle(ALARM_INTERVAL_S)

    @property
    def depth(self) -> int:
        """Records received but not yet taken for a segment."""
        return self._queued

    def lag_s(self) -> float:
        """Age of the oldest record not yet durable (0 when everything is on disk)."""
        oldest = self._in_flight_since  # records being written arrived before queued ones
        if oldest is None and self._batches:
            oldest = self._batches[0][0]
        return 0.0 if oldest is None else time.monotonic() - oldest

    async def put(self, records: list[str], tally: Tally | None = None) -> None:
        """Queue one frame's records with their tally (None: the summary reads the lines);
        waits (never drops) while the queue is full."""
        if self._queued >= self._limit:
            await self._wait_for_room()
        self._batches.append((time.monotonic(), records, tally))
        self._queued += len(records)
        self._arrived.set()

    def note_quarantined(self, count: int) -> None:
        """`count` more pushed items were quarantined; the next segment's summary says so."""
        self._quarantined += count

    async def _wait_for_room(self) -> None:
        started = time.monotonic()
        self.blocked = True
        self._pauses += 1
        if self._alarm.ready():
            log.error(
                "spool queue full: %d records waiting for the disk (limit %d), %d events"
                " written so far, segment #%d next; pausing socket reads until the disk catches"
                " up (%d pauses, %.1f s paused in all)",
                self._queued,
                self._limit,
                self._stats.events_written,
                self._writer.next_seq,
                self._pauses,
                self._stats.backpressure_s,
            )
        try:
            while self._queued >= self._limit:
                self._room.clear()
                await self._room.wait()
        finally:
            self.blocked = False
            waited = time.monotonic() - started
            self._stats.backpressure_s += waited
        if waited >= LONG_PAUSE_S:
            log.warning("spool queue has room again after %.1f s; reading the socket again", waited)

    def close(self) -> None:
        """Stop accepting waits for more data: `run` flushes what is queued and returns."""
        self._closing = True
        self._arrived.set()

    async def run(self) -> None:
        """Write segments until `close()` and everything queued is durable."""
        while True:
            segment = await self._next_segment()
            if segment is None:
                return
            await self._publish(*segment)
            self._in_flight_since = None

    async def _next_segment(self) -> tuple[Pieces, int] | None:
        while not self._batches:
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        self._in_flight_since = self._batches[0][0]
        deadline = self._in_flight_since + self._max_age_s
        pieces: Pieces = []
        taken = 0
        while True:
            taken = self._take(pieces, taken)
            remaining = deadline - time.monotonic()
            if taken >= self._max_events or self._closing or remaining <= 0:
                quarantined, self._quarantined = self._quarantined, 0
                return pieces, quarantined
            if not self._batches:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)

    def _take(self, pieces: Pieces, taken: int) -> int:
        """Move queued records into `pieces`, up to the segment size; returns how many
        records the pieces hold. A batch split in two loses its tally (it is the whole
        frame's): both pieces are read instead."""
        while self._batches and taken < self._max_events:
            arrived, batch, tally = self._batches.popleft()
            room = self._max_events - taken
            if len(batch) > room:
                self._batches.appendleft((arrived, batch[room:], None))
                batch, tally = batch[:room], None
            pieces.append((batch, tally))
            taken += len(batch)
            self._queued -= len(batch)
        if self._queued < self._limit:
            self._room.set()
        return taken

    async def _publish(self, pieces: Pieces, quarantined: int) -> None:
        """Write one segment and its summary, retrying a failing disk for as long as it
        takes."""
        records = [line for batch, _ in pieces for line in batch]
        summary = await asyncio.to_thread(_summarize, pieces, quarantined)
        for attempt in itertools.count():
            try:
                segment = await asyncio.to_thread(self._writer.write, records, summary)
            except OSError as exc:
                delay = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                log.error(
                    "cannot write spool segment #%d (%d records) in %s: %s; retrying in %.1f s,"
                    " %d more records waiting",
                    self._writer.next_seq,
                    len(records),
                    self._writer.spool_dir,
                    exc,
                    delay,
                    self._queued,
                )
                await asyncio.sleep(delay)
            else:
                break
        events = len(records) - sum(1 for line in records if line.startswith(GAP_PREFIX))
        self._stats.events_written += events
        self._stats.segments_written += 1
        self._stats.last_seq = segment.seq
        if self._on_segment is not None:
            self._on_segment()
        log.debug("segment #%d: %d events, %d gaps", segment.seq, events, len(records) - events)


def _summarize(pieces: Pieces, quarantined: int) -> SegmentSummary:
    total = Tally()
    for batch, tally in pieces:
        total.merge(tally or Tally().add_lines(batch))
    return total.summary(quarantined)
