"""Which spool segments to ingest next, and when to try again: decisions the spool sensor and
the ingestion asset share, as small pure functions.

What is ingested is what `IngestedRanges` records (written after the Parquet commit), never
what was requested, so a batch whose run failed is simply still pending. Batches take pending
segments oldest first, bounded by records, so one run's memory is bounded whatever the
backlog; retention may delete only segments below the first pending one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from cg_assets.storage.ingested import SeqRange, covers
from ws_sidecar.spool import Segment

T = TypeVar("T")

# A backlog of tiny segments must not make one run list thousands of files either.
MAX_SEGMENTS_PER_RUN = 2000
# Back-off doubles per consecutive failure up to this (or the base, if larger), so a long
# outage is still retried twice an hour.
RETRY_BACKOFF_CAP_S = 1800.0


def pending(segments: Sequence[Segment], ranges: Sequence[SeqRange]) -> list[Segment]:
    """The segments not recorded as ingested, in seq order."""
    return [s for s in segments if not covers(ranges, s.seq)]


def watermark(segments: Sequence[Segment], ranges: Sequence[SeqRange]) -> int:
    """The highest seq at or below which every segment on disk is recorded as ingested (-1 if
    the oldest is not): the most retention may delete."""
    first_pending = next((s.seq for s in segments if not covers(ranges, s.seq)), None)
    if first_pending is not None:
        return first_pending - 1
    return segments[-1].seq if segments else -1


def take_batch(
    sized: Iterable[tuple[T, int]], max_records: int, max_segments: int = MAX_SEGMENTS_PER_RUN
) -> Iterator[T]:
    """The leading items of `sized` ((segment, records) pairs, oldest first) whose records
    add up to at most `max_records`; always at least one, so a segment larger than the cap
    is still ingested, alone. Lazy: sizes are asked for only until the batch is full."""
    total = 0
    for taken, (item, size) in enumerate(sized):
        if taken and (total + size > max_records or taken >= max_segments):
            return
        total += size
        yield item


def retry_delay_s(failures: int, base_s: float) -> float:
    """How long after the last of `failures` consecutive failed runs the batch is retried."""
    if failures <= 0:
        return 0.0
    return min(base_s * 2 ** min(failures - 1, 30), max(base_s, RETRY_BACKOFF_CAP_S))
