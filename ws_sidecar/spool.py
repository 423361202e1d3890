"""The liquidation spool: the one place its on-disk format is defined, written and read.

`CG_DATA_DIR/spool/` holds segments `seg-{seq:012d}.jsonl`, one JSON object per line with
"kind" first: liquidation events and gap records (docs/CONTRACTS.md). A segment is written
under a hidden temporary name, fsync'd, renamed into place and the directory fsync'd, so a
reader listing `seg-*.jsonl` only ever sees complete segments, even after a kill -9 or a
power cut, and a segment that exists stays. `seq` only grows, across restarts too, so a
consumer's cursor (the last seq it ingested) never skips or repeats a segment.

The writer here is synchronous on purpose: the sidecar calls it from a worker thread
(`ws_sidecar.sink`), and `cg_assets` uses only the reader functions, so Dagster processes
import nothing asynchronous. The event normalisers live in `ws_sidecar.parse` and are
re-exported here because they are part of the spool's contract.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from ws_sidecar.parse import event_id, normalize_rest_order, normalize_ws_item

__all__ = [
    "CorruptSegmentError",
    "Segment",
    "SegmentContents",
    "SpoolBusyError",
    "SpoolWriter",
    "count_records",
    "encode_record",
    "encode_ws_event",
    "event_id",
    "gap_record",
    "last_record_time",
    "list_segments",
    "normalize_rest_order",
    "normalize_ws_item",
    "prune_segments",
    "read_segment",
    "segment_time_bounds",
]

_SEGMENT_RE = re.compile(r"^seg-(\d{12})\.jsonl$")
_TEMP_RE = re.compile(r"^\.seg-(\d+)\.tmp$")
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_EVENT_LINE = (
    '{"kind":"event","event_id":"%s","exchange":%s,"pair":%s,"symbol":%s,"side":"%s",'
    '"price":%r,"usd_value":%r,"time":%d,"received_at":%d,"conn_id":%s,"source":"ws","raw":%s}'
)
GAP_PREFIX = '{"kind":"gap"'

log = logging.getLogger(__name__)


class CorruptSegmentError(ValueError):
    """A segment that cannot be read as complete JSON lines; the message names the file."""


class SpoolBusyError(RuntimeError):
    """Another writer holds the spool: two sidecars must never number segments at once."""


@dataclass(frozen=True, order=True)
class Segment:
    """A published segment: its sequence number and its path."""

    seq: int
    path: Path


@dataclass
class SegmentContents:
    """A segment's records split by kind, each list in file order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)


def segment_name(seq: int) -> str:
    return f"seg-{seq:012d}.jsonl"


def encode_record(record: dict[str, Any]) -> str:
    """One spool line (no newline) for any record; "kind" must be its first key."""
    return _encode(record)


def encode_ws_event(event: dict[str, Any], raw_text: str | None = None) -> str:
    """The line of a WebSocket event from `normalize_ws_item`, the same JSON `encode_record`
    gives, built by formatting: at 50,000 events/s, serialising every dict (and the raw item
    once more) is what would make the disk writer fall behind. `raw_text` is the item's
    original JSON, when the frame let it be cut out (`parse.item_texts`)."""
    return _EVENT_LINE % (
        event["event_id"],
        encode_basestring_ascii(event["exchange"]),
        encode_basestring_ascii(event["pair"]),
        encode_basestring_ascii(event["symbol"]),
        event["side"],
        event["price"],
        event["usd_value"],
        event["time"],
        event["received_at"],
        encode_basestring_ascii(event["conn_id"]),
        raw_text or _encode(event["raw"]),
    )


def gap_record(start: int, end: int, reason: str, conn_id: str) -> dict[str, Any]:
    """No event was received in (start, end) ms: a connection ended (or the process died) at
    `start` and the next subscription began at `end`."""
    return {
        "kind": "gap",
        "start": int(start),
        "end": int(end),
        "reason": reason,
        "conn_id": conn_id,
    }


def list_segments(spool_dir: Path | str, after_seq: int = -1) -> list[Segment]:
    """Published segments with seq > after_seq, in seq order; [] if the spool does not exist."""
    found = []
    try:
        entries = os.scandir(spool_dir)
    except FileNotFoundError:
        return []
    with entries:
        for entry in entries:
            match = _SEGMENT_RE.match(entry.name)
            if match and int(match.group(1)) > after_seq:
                found.append(Segment(int(match.group(1)), Path(entry.path)))
    found.sort()
    return found


def read_segment(path: Path | str) -> SegmentContents:
    """Events and gaps of one segment; CorruptSegmentError (naming the file and line) if it is
    truncated or holds a line that is not a spool record."""
    data = Path(path).read_bytes()
    if not data:
        raise CorruptSegmentError(f"spool segment {path} is empty")
    if not data.endswith(b"\n"):
        raise CorruptSegmentError(f"spool segment {path} is truncated (no newline at the end)")
    contents = SegmentContents()
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CorruptSegmentError(f"spool segment {path}, line {number}: {exc}") from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "event":
            contents.events.append(record)
        elif kind == "gap":
            contents.gaps.append(record)
        else:
            raise CorruptSegmentError(
                f"spool segment {path}, line {number}: not an event or gap record"
            )
    return contents


def last_record_time(spool_dir: Path | str) -> int | None:
    """When the newest published record was received (an event's `received_at`, a gap's
    `end`), so a restarted sidecar knows where its downtime gap begins; None if the spool is
    empty."""
    for segment in reversed(list_segments(spool_dir)):
        try:
            contents = read_segment(segment.path)
        except (OSError, CorruptSegmentError) as exc:
            log.error("skipping unreadable segment while resuming: %s", exc)
            continue
        times = [e["received_at"] for e in contents.events if e.get("received_at")]
        times += [g["end"] for g in contents.gaps]
        if times:
            return max(int(t) for t in times)
    return None


def segment_time_bounds(path: Path | str) -> tuple[int, int]:
    """Earliest and latest time a segment touches, reading only its first and last lines and
    its (rare) gap records, so a consumer polling the spool stays cheap at tens of thousands of
    events a second. Events are written in receipt order, so the ends bound every receipt time;
    an exchange's own timestamp may trail its receipt a little, which consumers allow for."""
    lines = Path(path).read_bytes().splitlines()
    if not lines:
        raise CorruptSegmentError(f"spool segment {path} is empty")
    records = [json.loads(line) for line in {lines[0], lines[-1]}]
    records += [
        r for r in map(json.loads, (ln for ln in lines if b'"gap"' in ln)) if r["kind"] == "gap"
    ]
    times = [int(r[k]) for r in records for k in ("time", "received_at", "start", "end") if k in r]
    return min(times), max(times)


def count_records(path: Path | str) -> int:
    """How many records (lines) a segment holds, without parsing them: what a consumer sizes
    its batches by."""
    return Path(path).read_bytes().count(b"\n")


def prune_segments(
    spool_dir: Path | str, up_to_seq: int, older_than_s: float, now: float
) -> list[int]:
    """Delete the segments a consumer is done with: seq <= `up_to_seq` and last modified more
    than `older_than_s` before `now`. The newest segment always stays, because a restarted
    writer numbers on from it and reads it to learn where its downtime began."""
    segments = list_segments(spool_dir)
    deleted = []
    for segment in segments[:-1]:
        if segment.seq > up_to_seq:
            break
        with contextlib.suppress(FileNotFoundError):
            if segment.path.stat().st_mtime < now - older_than_s:
                segment.path.unlink()
                deleted.append(segment.seq)
    return deleted


class SpoolWriter:
    """Publishes numbered segments atomically. Not thread-safe; one writer per spool, which an
    exclusive lock on the spool directory enforces across processes.

    On start it deletes temporary files a killed predecessor left behind (never published, so
    never seen by a reader) and continues after the highest published seq, or after
    `min_seq - 1` if that is higher (segments a consumer already deleted still count).
    """

    def __init__(self, spool_dir: Path | str, min_seq: int = 0) -> None:
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self.spool_dir, os.O_RDONLY)
        try:
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._dir_fd)
            raise SpoolBusyError(
                f"another process is writing to the spool {self.spool_dir}"
                " (is a second ws_sidecar running with the same CG_DATA_DIR?)"
            ) from None
        self._remove_temporaries()
        existing = list_segments(self.spool_dir)
        self.next_seq = max(existing[-1].seq + 1 if existing else 0, min_seq)

    def close(self) -> None:
        """Release the spool (the lock goes with the descriptor, also on kill -9)."""
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def _remove_temporaries(self) -> None:
        for entry in os.scandir(self.spool_dir):
            if _TEMP_RE.match(entry.name):
                log.warning("removing unpublished segment %s left by an earlier run", entry.name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def write(self, lines: Sequence[str]) -> Segment:
        """Publish encoded records (`encode_record`, `encode_ws_event`) as the next segment;
        returns it once durable.
        If it raises before the rename, nothing was published and the next call reuses the
        seq; a failing directory sync after the rename still consumes it."""
        if not lines:
            raise ValueError("a segment needs at least one record")
        seq = self.next_seq
        data = ("\n".join(lines) + "\n").encode()
        temp = self.spool_dir / f".seg-{seq}.tmp"
        final = self.spool_dir / segment_name(seq)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)
        # Published: the seq is spent even if the directory sync below fails.
        self.next_seq = seq + 1
        os.fsync(self._dir_fd)  # makes the rename itself durable, not only the bytes
        return Segment(seq, final)
