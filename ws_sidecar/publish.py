"""Publishing closed segments from the local spool to the shared store (`CG_LAKE_URL`).

When the lake lives elsewhere than `CG_DATA_DIR` (an object store, typically), the sidecar
still writes every segment to its local spool first, durably, exactly as on one machine:
the socket never waits on the network, and an outage of the store loses nothing. This task
then copies the closed segments, in seq order, to `<CG_LAKE_URL>/spool/` (each file in one
upload, `spool.publish_segment`), retrying a failing store with back-off for as long as it
takes. A local segment is deleted only once it is published, and the newest one always stays,
because a restarted sidecar numbers on from it and reads it to learn where its downtime began.

Where publishing stands is read from the store itself (its highest seq), not kept in a file of
its own: segments go out in order, so everything up to that seq is published, and a sidecar
restarted after a crash between two uploads simply publishes the missing ones again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from ws_sidecar.spool import SpoolPath, list_segments, prune_segments, publish_segment
from ws_sidecar.stats import Stats

log = logging.getLogger(__name__)

RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Also look for work this often without a nudge (a segment left from before a restart).
POLL_S = 5.0


def highest_seq(spool: SpoolPath) -> int:
    """The highest seq in `spool`, -1 if it has none (OSError if it cannot be listed)."""
    segments = list_segments(spool)
    return segments[-1].seq if segments else -1


class Publisher:
    """Copies the local spool's segments to `target`, oldest first, until cancelled."""

    def __init__(
        self, local: Path, target: SpoolPath, stats: Stats, retry_s: tuple[float, ...] = RETRY_S
    ) -> None:
        self.local = local
        self.target = target
        self._stats = stats
        self._retry_s = retry_s
        self._published: int | None = None  # learnt from the store on the first success
        self._nudged = asyncio.Event()
        self.failures = 0

    def nudge(self) -> None:
        """A segment was closed: publish it now rather than at the next poll."""
        self._nudged.set()

    async def run(self) -> None:
        while True:
            self._nudged.clear()
            try:
                await asyncio.to_thread(self.publish_pending)
            except OSError as exc:
                delay = self._retry_s[min(self.failures, len(self._retry_s) - 1)]
                self.failures += 1
                log.error(
                    "cannot publish spool segments to %s (attempt %d): %s; they stay in %s,"
                    " retrying in %.1f s",
                    self.target,
                    self.failures,
                    exc,
                    self.local,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if self.failures:
                log.warning("publishing to %s again after %d failures", self.target, self.failures)
                self.failures = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), POLL_S)

    def publish_pending(self) -> int:
        """Publish every local segment the store lacks, then drop the published local copies;
        returns how many were published. Raises OSError when the store fails (what was
        published before stays published)."""
        if self._published is None:
            self._published = highest_seq(self.target)
        count = 0
        for segment in list_segments(self.local, after_seq=self._published):
            publish_segment(segment, self.target)
            self._published = self._stats.last_published_seq = segment.seq
            self._stats.segments_published += 1
            count += 1
        prune_segments(self.local, self._published, older_than_s=0.0, now=time.time() + 1)
        return count
