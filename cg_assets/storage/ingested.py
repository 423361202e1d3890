"""Which numbered input pieces (spool segments) an asset holds for good, kept beside its days.

A consumer that moves its cursor when it *requests* work loses every batch whose run then
fails. What counts instead is what a run stored: the ingesting run adds its range here only
after its Parquet days are committed, whoever decides what to ingest next asks for everything
not recorded here, and retention deletes only what is recorded here. A run killed between the
Parquet commit and this record leaves its range unrecorded, so the range is ingested again,
which the asset's merge makes harmless.

The record is a short list of inclusive `[first, last]` ranges (one range while ingestion
goes in order), written atomically under a lock, so concurrent runs (the sensor's and a manual
one) cannot lose each other's ranges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cg_assets.storage.lake import Lake

SeqRange = tuple[int, int]
RECORD_NAME = "_ingested_segments.json"


class IngestRecordError(ValueError):
    """The record exists but cannot be read; the message names the file and the problem."""


def add_range(ranges: Sequence[SeqRange], first: int, last: int) -> list[SeqRange]:
    """`ranges` with [first, last] added: sorted, disjoint, touching ranges joined."""
    if first > last:
        raise ValueError(f"empty range {first}..{last}")
    merged: list[SeqRange] = []
    for lo, hi in sorted([*ranges, (first, last)]):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def covers(ranges: Sequence[SeqRange], seq: int) -> bool:
    return any(lo <= seq <= hi for lo, hi in ranges)


class IngestedRanges:
    """The record of one asset in one lake."""

    def __init__(self, lake: Lake, asset: str) -> None:
        self.lake = lake
        self.asset = asset

    @property
    def where(self) -> str:
        return f"{self.lake.url(self.asset)}/{RECORD_NAME}"

    def ranges(self) -> list[SeqRange]:
        data = self.lake.read_state(self.asset, RECORD_NAME)
        return [] if data is None else _parse(data, self.where)

    def add(self, first: int, last: int) -> list[SeqRange]:
        """Record [first, last] as stored; returns the whole record as written."""
        with self.lake.state_lock(self.asset, RECORD_NAME):
            ranges = add_range(self.ranges(), first, last)
            body = {"ranges": [list(r) for r in ranges]}
            self.lake.write_state(self.asset, RECORD_NAME, json.dumps(body).encode())
        return ranges


def _parse(data: bytes, where: str) -> list[SeqRange]:
    try:
        raw = json.loads(data)["ranges"]
        ranges = [(int(lo), int(hi)) for lo, hi in raw]
    except (ValueError, KeyError, TypeError) as exc:
        raise IngestRecordError(
            f"{where} is not a record of ingested ranges ({type(exc).__name__}: {exc});"
            " move it aside to have every spool segment ingested again"
        ) from None
    bad = [r for r in ranges if r[0] > r[1]]
    if bad:
        raise IngestRecordError(f"{where}: range {bad[0][0]}..{bad[0][1]} is empty")
    return ranges
