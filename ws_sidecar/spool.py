"""The liquidation spool: the one place its on-disk format is defined, written and read.

`CG_DATA_DIR/spool/` holds segments `seg-{seq:012d}.jsonl`, one JSON object per line with
"kind" first: liquidation events and gap records (docs/CONTRACTS.md). A segment is written
under a hidden temporary name, fsync'd, renamed into place and the directory fsync'd, so a
reader listing `seg-*.jsonl` only ever sees complete segments, even after a kill -9 or a
power cut, and a segment that exists stays. `seq` only grows, across restarts too, so a
consumer's cursor (the last seq it ingested) never skips or repeats a segment.

Beside each segment the sidecar puts its summary, `seg-{seq:012d}.summary.json`
(`ws_sidecar.summary`), renamed into place just before the segment, so a reader that sees a
segment normally sees its summary too; one without (older, or lost in a crash) is summarised
from its events instead. A summary is not fsync'd: one lost to a power cut is just missing.

Readers never stop at bad data: a line that is not a usable record (`ws_sidecar.validate`) is
skipped and reported with the reason, whatever the segment holds.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from ws_sidecar.parse import event_id, normalize_rest_order, normalize_ws_item
from ws_sidecar.store import ObjectPath
from ws_sidecar.summary import SegmentSummary, parse_summary, summarize
from ws_sidecar.validate import event_problem, gap_problem

__all__ = [
    "Segment",
    "SegmentContents",
    "SegmentSummary",
    "SkippedRecord",
    "SpoolBusyError",
    "SpoolPath",
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
    "publish_segment",
    "read_segment",
    "read_summary_file",
    "segment_summary",
    "segment_time_bounds",
    "summary_path",
]

_SEGMENT_RE = re.compile(r"^seg-(\d{12})\.jsonl$")
_SUMMARY_RE = re.compile(r"^seg-(\d{12})\.summary\.json$")
_TEMP_RE = re.compile(r"^\.seg-(\d+)(\.summary)?\.tmp$")
PREVIEW_BYTES = 200
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_EVENT_LINE = (
    '{"kind":"event","event_id":"%s","exchange":%s,"pair":%s,"symbol":%s,"side":"%s",'
    '"price":%r,"usd_value":%r,"time":%d,"received_at":%d,"conn_id":%s,"source":"ws","raw":%s}'
)
GAP_PREFIX = '{"kind":"gap"'

log = logging.getLogger(__name__)

# A local spool is a directory; a published one may be a prefix in an object store.
SpoolPath = Path | ObjectPath


class SpoolBusyError(RuntimeError):
    """Another writer holds the spool: two sidecars must never number segments at once."""


@dataclass(frozen=True, order=True)
class Segment:
    """A published segment: its sequence number and its path."""

    seq: int
    path: SpoolPath


@dataclass(frozen=True)
class SkippedRecord:
    """A line of a segment that is not a usable record: its number, why, and its start."""

    line: int
    reason: str
    text: str


@dataclass
class SegmentContents:
    """A segment's usable records split by kind, and the lines skipped; each in file order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[SkippedRecord] = field(default_factory=list)


def segment_name(seq: int) -> str:
    return f"seg-{seq:012d}.jsonl"


def summary_path(segment_path: SpoolPath | str) -> SpoolPath:
    """Where the summary of the segment at `segment_path` lives."""
    return _path(segment_path).with_suffix(".summary.json")


def _path(path: SpoolPath | str) -> SpoolPath:
    return path if isinstance(path, ObjectPath) else Path(path)


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


def list_segments(spool_dir: SpoolPath | str, after_seq: int = -1) -> list[Segment]:
    """Published segments with seq > after_seq, in seq order; [] if the spool does not exist."""
    found = []
    for name, path in _entries(_path(spool_dir)):
        match = _SEGMENT_RE.match(name)
        if match and int(match.group(1)) > after_seq:
            found.append(Segment(int(match.group(1)), path))
    found.sort(key=lambda s: s.seq)
    return found


def _entries(spool_dir: SpoolPath) -> list[tuple[str, SpoolPath]]:
    if isinstance(spool_dir, ObjectPath):
        return [(p.name, p) for p in spool_dir.iterdir()]
    try:
        with os.scandir(spool_dir) as entries:
            return [(e.name, Path(e.path)) for e in entries]
    except FileNotFoundError:
        return []


def read_segment(path: SpoolPath | str) -> SegmentContents:
    """Events and gaps of one segment. A line that is not a usable record (a truncated end,
    corruption, a value out of range) is skipped and listed in `.skipped`, so one bad line
    never stops a reader; only a file that cannot be read raises (OSError)."""
    contents = SegmentContents()
    for number, line in enumerate(_lines(_path(path).read_bytes()), 1):
        record, problem = _parse_record(line)
        if problem is not None:
            contents.skipped.append(SkippedRecord(number, problem, _preview(line)))
        elif record["kind"] == "event":
            contents.events.append(record)
        else:
            contents.gaps.append(record)
    return contents


def _lines(data: bytes) -> list[bytes]:
    """A segment's lines; a last line without its newline (a truncated file) is kept, for
    `_parse_record` to judge."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _parse_record(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a usable event or gap line, else (None, why not)."""
    try:
        record = json.loads(line.decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return None, f"not JSON: {exc}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    kind = record.get("kind")
    if kind == "event":
        problem = event_problem(record)
    elif kind == "gap":
        problem = gap_problem(record)
    else:
        problem = f"not an event or gap record (kind {_preview(repr(kind).encode())})"
    return (None, problem) if problem else (record, None)


def _preview(line: bytes) -> str:
    text = line[:PREVIEW_BYTES].decode(errors="replace")
    return text + "…" if len(line) > PREVIEW_BYTES else text


def last_record_time(spool_dir: Path | str) -> int | None:
    """When the newest published record was received (an event's `received_at`, a gap's
    `end`), so a restarted sidecar knows where its downtime gap begins; None if the spool is
    empty."""
    for segment in reversed(list_segments(spool_dir)):
        try:
            contents = read_segment(segment.path)
        except OSError as exc:
            log.error("skipping unreadable segment while resuming: %s", exc)
            continue
        times = [e["received_at"] for e in contents.events]
        times += [g["end"] for g in contents.gaps]
        if times:
            return max(times)
    return None


def read_summary_file(segment_path: SpoolPath | str) -> SegmentSummary | None:
    """The summary the sidecar wrote for a segment; None if there is none or it is unusable."""
    path = summary_path(segment_path)
    try:
        return parse_summary(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as exc:
        log.warning("ignoring the unusable segment summary %s: %s", path, exc)
        return None


def segment_summary(segment_path: SpoolPath | str) -> SegmentSummary:
    """A segment's summary: the file the sidecar wrote, or, failing that, computed from the
    segment's events (every line parsed, the slow way); empty if the segment is gone."""
    summary = read_summary_file(segment_path)
    if summary is not None:
        return summary
    try:
        contents = read_segment(segment_path)
    except FileNotFoundError:
        return SegmentSummary()
    unique = {e["event_id"]: e for e in contents.events}  # a line written twice counts once
    return summarize(
        unique.values(),
        [(g["start"], g["end"]) for g in contents.gaps],
        skipped=len(contents.skipped),
    )


def segment_time_bounds(path: SpoolPath | str) -> tuple[int, int] | None:
    """Earliest and latest time a segment touches (event and receipt times, gap bounds), or
    None if it holds no usable record or is gone. Cheap, since a consumer polls the spool at
    tens of thousands of events a second: from the summary, else from the first and last
    usable lines and the (rare) gap records. Events are written in receipt order, so the ends
    bound every receipt time; an exchange's own timestamp may trail its receipt a little,
    which consumers allow for."""
    summary = read_summary_file(path)
    if summary is not None:
        if summary.time_min is None or summary.time_max is None:
            return None
        return summary.time_min, summary.time_max
    try:
        lines = _lines(_path(path).read_bytes())
    except FileNotFoundError:
        return None
    records = [_first_usable(lines), _first_usable(reversed(lines))]
    records += [_parse_record(line)[0] for line in lines if b'"gap"' in line]
    times = [r[k] for r in records if r for k in ("time", "received_at", "start", "end") if k in r]
    return (min(times), max(times)) if times else None


def _first_usable(lines: Iterable[bytes]) -> dict[str, Any] | None:
    return next((r for r, _ in map(_parse_record, lines) if r is not None), None)


def count_records(path: SpoolPath | str) -> int:
    """How many records (lines) a segment holds, without parsing them: what a consumer sizes
    its batches by."""
    return _path(path).read_bytes().count(b"\n")


def prune_segments(
    spool_dir: SpoolPath | str, up_to_seq: int, older_than_s: float, now: float
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
                summary_path(segment.path).unlink(missing_ok=True)
                deleted.append(segment.seq)
    return deleted


def publish_segment(segment: Segment, target_dir: SpoolPath) -> Segment:
    """Copy a segment and its summary into another spool (an object store, or a directory other
    nodes read): the summary first, then the segment, so a reader of the target sees complete
    segments only, normally with their summary. Each goes in one upload, which an object store
    shows whole or not at all (no temporary name and rename there); a directory gets the same
    temporary-name-and-rename the writer uses. Publishing a segment again replaces it with the
    same bytes, so a retry after an uncertain failure is harmless."""
    target = _path(target_dir) / segment.path.name
    try:
        summary = summary_path(segment.path).read_bytes()
    except FileNotFoundError:
        summary = None
    if summary is not None:
        _put(summary_path(target), summary, f".seg-{segment.seq}.summary.tmp")
    _put(target, segment.path.read_bytes(), f".seg-{segment.seq}.tmp")
    return Segment(segment.seq, target)


def _put(path: SpoolPath, data: bytes, temp_name: str) -> None:
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / temp_name
    _write_file(temp, data, sync=True)
    os.rename(temp, path)


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
        existing = list_segments(self.spool_dir)
        self._remove_leftovers({s.seq for s in existing})
        self.next_seq = max(existing[-1].seq + 1 if existing else 0, min_seq)

    def close(self) -> None:
        """Release the spool (the lock goes with the descriptor, also on kill -9)."""
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def _remove_leftovers(self, published: set[int]) -> None:
        """Temporary files and summaries without a segment, which a killed predecessor left
        (or a pruning interrupted between a segment and its summary)."""
        for entry in os.scandir(self.spool_dir):
            summary = _SUMMARY_RE.match(entry.name)
            if _TEMP_RE.match(entry.name) or (summary and int(summary.group(1)) not in published):
                log.warning("removing %s, left unpublished by an earlier run", entry.name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def write(self, lines: Sequence[str], summary: SegmentSummary | None = None) -> Segment:
        """Publish encoded records (`encode_record`, `encode_ws_event`) as the next segment,
        with its summary if given; returns the segment once durable.
        If it raises before the segment's rename, nothing was published and the next call
        reuses the seq (and replaces a summary already renamed); a failing directory sync
        after the rename still consumes it."""
        if not lines:
            raise ValueError("a segment needs at least one record")
        seq = self.next_seq
        final = self.spool_dir / segment_name(seq)
        if summary is not None:
            temp = self.spool_dir / f".seg-{seq}.summary.tmp"
            _write_file(temp, summary.to_json().encode(), sync=False)
            os.rename(temp, summary_path(final))
        temp = self.spool_dir / f".seg-{seq}.tmp"
        _write_file(temp, ("\n".join(lines) + "\n").encode(), sync=True)
        os.rename(temp, final)
        # Published: the seq is spent even if the directory sync below fails.
        self.next_seq = seq + 1
        os.fsync(self._dir_fd)  # makes the rename itself durable, not only the bytes
        return Segment(seq, final)


def _write_file(path: Path, data: bytes, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
