"""The quarantine file: every pushed item the sidecar refused, kept for a person to look at.

A rejected item never reaches the spool (readers would have to cope with it), yet dropping it
silently would hide a feed that changed under us, such as timestamps switching to
microseconds. So each reject becomes one JSON line in `CG_DATA_DIR/quarantine.jsonl`:
`{"reason", "received_at", "conn_id", "raw"}`, `raw` being the item as received (cut to a
string preview past RAW_LIMIT characters). The file is bounded: past `max_bytes` it is
renamed to `quarantine.jsonl.1` (replacing the previous one) and a new file is begun, so at
most about twice `max_bytes` is kept however bad the feed gets.

Writes are plain appends from the event loop, one per frame: rejects are rare, and a frame's
lines are a few kilobytes at most. A disk error is logged, never raised: the spool matters
more than its quarantine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ws_sidecar.parse import Reject
from ws_sidecar.stats import Throttle

log = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.jsonl"  # in CG_DATA_DIR
RAW_LIMIT = 2_000
ERROR_INTERVAL_S = 10.0


def quarantine_line(reject: Reject, received_at: int, conn_id: str) -> str:
    """One reject as its JSON line (no newline)."""
    raw = json.dumps(reject.raw, default=repr)
    value = reject.raw if len(raw) <= RAW_LIMIT else raw[:RAW_LIMIT] + "…"
    return json.dumps(
        {"reason": reject.reason, "received_at": received_at, "conn_id": conn_id, "raw": value},
        default=repr,
    )


class Quarantine:
    """Appends rejects to `path`, rotating it to `path.1` once it exceeds `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._errors = Throttle(ERROR_INTERVAL_S)

    @property
    def rotated_path(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def add(self, rejects: Sequence[Reject], received_at: int, conn_id: str) -> None:
        if not rejects:
            return
        data = "".join(quarantine_line(r, received_at, conn_id) + "\n" for r in rejects)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(data)
                size = f.tell()
            if size > self.max_bytes:
                os.replace(self.path, self.rotated_path)
        except OSError as exc:
            if self._errors.ready():
                log.error("cannot write the quarantine file %s: %s", self.path, exc)
