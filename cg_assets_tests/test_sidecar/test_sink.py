"""The queue in front of the disk: segment rolling, backpressure instead of loss, retries."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from ws_sidecar.sink import SpoolSink
from ws_sidecar.spool import (
    Segment,
    SpoolWriter,
    encode_record,
    gap_record,
    list_segments,
    read_segment,
    read_summary_file,
)
from ws_sidecar.stats import Stats
from ws_sidecar.summary import SegmentSummary, Tally


class GatedWriter(SpoolWriter):
    """A writer whose disk can be held (gate cleared) or made to fail a number of times."""

    def __init__(self, spool_dir: Path) -> None:
        super().__init__(spool_dir)
        self.gate = threading.Event()
        self.gate.set()
        self.failures = 0

    def write(self, lines: Sequence[str], summary: SegmentSummary | None = None) -> Segment:
        self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        return super().write(lines, summary)


T0 = 1_700_000_000_000


def event(i: int, coin: str = "BTC", usd: float = 1_000.0) -> dict:
    """A spool event in the contract's format, `i` ms after T0."""
    return {"kind": "event", "event_id": f"e{i}", "exchange": "Binance", "pair": f"{coin}USDT",
            "symbol": coin, "side": "long" if i % 2 else "short", "price": 90_000.0,
            "usd_value": usd, "time": T0 + i, "received_at": T0 + i + 100, "conn_id": "c",
            "source": "ws", "raw": {}}  # fmt: skip


def line(i: int, coin: str = "BTC", usd: float = 1_000.0) -> str:
    return encode_record(event(i, coin, usd))


@pytest.fixture
def writer(tmp_path: Path):
    w = GatedWriter(tmp_path / "spool")
    yield w
    w.close()


def segment_sizes(writer: SpoolWriter) -> list[int]:
    return [len(read_segment(s.path).events) for s in list_segments(writer.spool_dir)]


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_segments_roll_at_the_event_limit(writer: GatedWriter):
    stats = Stats()

    async def scenario() -> None:
        sink = SpoolSink(writer, stats, max_events=10, max_age_s=60)
        task = asyncio.create_task(sink.run())
        for batch in ([line(i) for i in range(7)], [line(i) for i in range(7, 25)]):
            await sink.put(batch)
        await until(lambda: stats.segments_written == 2)
        sink.close()
        await task

    asyncio.run(scenario())
    assert segment_sizes(writer) == [10, 10, 5]
    assert (stats.events_written, stats.last_seq) == (25, 2)


def test_segments_roll_after_the_age_limit(writer: GatedWriter):
    stats = Stats()

    async def scenario() -> float:
        sink = SpoolSink(writer, stats, max_events=1000, max_age_s=0.2)
        task = asyncio.create_task(sink.run())
        started = time.monotonic()
        await sink.put([line(1), line(2)])
        await until(lambda: stats.segments_written == 1)
        elapsed = time.monotonic() - started
        await sink.put([encode_record(gap_record(1, 2, "test", "c"))])
        await until(lambda: stats.segments_written == 2)
        sink.close()
        await task
        return elapsed

    elapsed = asyncio.run(scenario())
    assert 0.15 <= elapsed < 2
    assert segment_sizes(writer) == [2, 0]
    assert stats.events_written == 2  # the gap record is not an event


def test_events_count_as_written_only_once_published(writer: GatedWriter):
    stats = Stats()
    writer.gate.clear()

    async def scenario() -> None:
        sink = SpoolSink(writer, stats, max_events=5, max_age_s=0.05)
        task = asyncio.create_task(sink.run())
        await sink.put([line(i) for i in range(5)])
        await asyncio.sleep(0.2)
        assert stats.events_written == 0
        assert list(writer.spool_dir.glob("seg-*")) == []
        assert sink.lag_s() >= 0.2
        writer.gate.set()
        await until(lambda: stats.events_written == 5)
        assert sink.lag_s() == 0
        sink.close()
        await task

    asyncio.run(scenario())


def test_full_queue_pauses_the_reader_and_drops_nothing(
    writer: GatedWriter, caplog: pytest.LogCaptureFixture
):
    stats = Stats()
    writer.gate.clear()

    async def scenario() -> None:
        sink = SpoolSink(writer, stats, max_events=4, max_age_s=0.01, queue_max_events=8)
        task = asyncio.create_task(sink.run())
        await sink.put([line(j) for j in range(4)])
        await until(lambda: sink.depth == 0)  # taken by the stuck writer
        for i in (1, 2):
            await sink.put([line(4 * i + j) for j in range(4)])
        assert sink.depth == 8
        blocked = asyncio.create_task(sink.put([line(100)]))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        assert sink.blocked
        writer.gate.set()
        await blocked
        sink.close()
        await task

    with caplog.at_level(logging.WARNING, logger="ws_sidecar.sink"):
        asyncio.run(scenario())
    assert stats.events_written == 13
    assert sum(segment_sizes(writer)) == 13
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "spool queue full: 8 records waiting" in errors[0]
    assert "pausing socket reads" in errors[0]
    assert stats.backpressure_s > 0.05


def test_a_failing_disk_is_retried_without_loss(
    writer: GatedWriter, caplog: pytest.LogCaptureFixture
):
    stats = Stats()
    writer.failures = 1

    async def scenario() -> None:
        sink = SpoolSink(writer, stats, max_events=10, max_age_s=0.01)
        task = asyncio.create_task(sink.run())
        await sink.put([line(i) for i in range(3)])
        await until(lambda: stats.events_written == 3)
        sink.close()
        await task

    with caplog.at_level(logging.ERROR, logger="ws_sidecar.sink"):
        asyncio.run(scenario())
    assert segment_sizes(writer) == [3]
    assert "No space left on device; retrying" in caplog.text


def test_close_flushes_everything_queued(writer: GatedWriter):
    stats = Stats()

    async def scenario() -> None:
        sink = SpoolSink(writer, stats, max_events=4, max_age_s=60)
        task = asyncio.create_task(sink.run())
        await sink.put([line(i) for i in range(10)])
        sink.close()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert segment_sizes(writer) == [4, 4, 2]


def test_each_segment_carries_its_summary_and_the_quarantine_count(writer: GatedWriter):
    """Tallies handed over with the lines make the summary; lines without one are read, and
    so are both pieces of a frame split between two segments."""
    stats = Stats()

    async def scenario() -> None:
        sink = SpoolSink(writer, stats, max_events=4, max_age_s=60)
        task = asyncio.create_task(sink.run())
        eth = [{**event(i, "ETH", 2_000.0), "side": "long"} for i in range(3)]
        sink.note_quarantined(2)
        await sink.put([encode_record(e) for e in eth], Tally().add_events(eth))
        await sink.put([line(3, usd=5e6), line(4)])  # no tally: the lines are read
        await until(lambda: stats.segments_written == 1)
        sink.note_quarantined(1)
        split = [event(i) for i in range(5, 12)]  # split 3 | 4 between the next two segments
        await sink.put([encode_record(e) for e in split], Tally().add_events(split))
        sink.close()
        await task

    asyncio.run(scenario())
    summaries = [read_summary_file(s.path) for s in list_segments(writer.spool_dir)]
    assert [(s.events, s.quarantined) for s in summaries] == [(4, 2), (4, 1), (4, 0)]
    eth, btc = summaries[0].coin_minutes
    assert (eth.coin, eth.long_usd, eth.long_count, eth.short_count) == ("ETH", 6_000.0, 3, 0)
    assert (btc.coin, btc.long_usd, btc.largest["usd_value"]) == ("BTC", 5e6, 5e6)
    assert btc.first_received_at == T0 + 103
    # Segments 2 and 3 hold orders 4-7 and 8-11 (a split frame's pieces, read from lines).
    assert [s.coin_minutes[0].long_count for s in summaries[1:]] == [2, 2]
