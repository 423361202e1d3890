"""The spool's on-disk format: atomic segments, resumed numbering, the reader API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ws_sidecar.parse import normalize_ws_item, parse_frame
from ws_sidecar.spool import (
    CorruptSegmentError,
    SpoolBusyError,
    SpoolWriter,
    encode_record,
    encode_ws_event,
    gap_record,
    last_record_time,
    list_segments,
    prune_segments,
    read_segment,
)

ITEM = {
    "baseAsset": "ETH",
    "exName": "OKX",
    "price": 3012.45,
    "side": 1,
    "symbol": "ETH-USDT-SWAP",
    "time": 1_700_000_000_000,
    "volUsd": 12_345.6789,
}


def event(i: int, received_at: int = 1_700_000_000_500) -> dict:
    item = {**ITEM, "time": ITEM["time"] + i}
    normalized = normalize_ws_item(item, "abc-1", received_at)
    assert normalized is not None
    return normalized


def lines(records: list[dict]) -> list[str]:
    return [encode_record(r) for r in records]


@pytest.fixture
def writer(tmp_path: Path):
    w = SpoolWriter(tmp_path / "spool")
    yield w
    w.close()


def test_roundtrip_keeps_events_and_gaps_in_order(writer: SpoolWriter):
    records = [event(0), gap_record(10, 20, "restart", "abc-2"), event(1)]
    segment = writer.write(lines(records))
    assert segment.path.name == "seg-000000000000.jsonl"
    contents = read_segment(segment.path)
    assert contents.events == [records[0], records[2]]
    assert contents.gaps == [{"kind": "gap", "start": 10, "end": 20, "reason": "restart",
                              "conn_id": "abc-2"}]  # fmt: skip
    first_line = segment.path.read_text().splitlines()[0]
    assert first_line.startswith('{"kind":"event",')


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_fast_event_line_is_the_same_json_as_the_generic_one(separators):
    payload = {"channel": "liquidationOrders", "data": [ITEM, {**ITEM, "side": 2}]}
    message = json.dumps(payload, separators=separators)
    parsed = parse_frame(message, "abc-1", 1_700_000_000_500)
    assert parsed.raw_texts is not None
    for ev, raw in zip(parsed.events, parsed.raw_texts, strict=True):
        generic = encode_record(ev)
        assert json.loads(encode_ws_event(ev, raw)) == json.loads(generic)
        assert encode_ws_event(ev) == generic
        # The original text is kept as sent, byte for byte.
        assert encode_ws_event(ev, raw).endswith(f',"raw":{raw}}}')
    odd = {**event(0), "exchange": 'Quote"And\\Ünicode', "conn_id": "x\ny"}
    assert json.loads(encode_ws_event(odd)) == json.loads(encode_record(odd))


def test_segments_are_numbered_on_and_listed_in_order(writer: SpoolWriter):
    for i in range(3):
        writer.write(lines([event(i)]))
    segments = list_segments(writer.spool_dir)
    assert [s.seq for s in segments] == [0, 1, 2]
    assert [s.seq for s in list_segments(writer.spool_dir, after_seq=0)] == [1, 2]
    assert list_segments(writer.spool_dir / "missing") == []


def test_numbering_resumes_after_the_highest_segment_and_drops_temporaries(tmp_path: Path):
    spool = tmp_path / "spool"
    first = SpoolWriter(spool)
    first.write(lines([event(0)]))
    first.write(lines([event(1)]))
    first.close()
    (spool / ".seg-2.tmp").write_text('{"kind":"event","event_id":"half')  # killed mid-write
    second = SpoolWriter(spool)
    assert second.next_seq == 2
    assert not (spool / ".seg-2.tmp").exists()
    assert second.write(lines([event(2)])).seq == 2
    second.close()
    # Segments a consumer deleted still count when the status file remembers them.
    for s in list_segments(spool):
        s.path.unlink()
    third = SpoolWriter(spool, min_seq=3)
    assert third.write(lines([event(3)])).seq == 3
    third.close()


def test_publication_is_atomic(writer: SpoolWriter, monkeypatch: pytest.MonkeyPatch):
    """A crash between write and rename leaves only a temporary file readers never list."""

    def crash(*args: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated"):
        writer.write(lines([event(0)]))
    assert list_segments(writer.spool_dir) == []
    assert [p.name for p in writer.spool_dir.iterdir()] == [".seg-0.tmp"]
    monkeypatch.undo()
    assert writer.write(lines([event(0)])).seq == 0  # the seq was not spent


def test_a_second_writer_on_the_same_spool_is_refused(writer: SpoolWriter):
    with pytest.raises(SpoolBusyError, match="another process"):
        SpoolWriter(writer.spool_dir)


def test_empty_segments_are_never_written(writer: SpoolWriter):
    with pytest.raises(ValueError, match="at least one"):
        writer.write([])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"kind":"event","event_id":"x"}\n{"kind":"ev', "truncated"),
        (b'{"kind":"event"}\nnot json\n', "line 2"),
        (b'{"kind":"mystery"}\n', "not an event or gap"),
        (b"", "empty"),
    ],
)
def test_corrupt_segments_raise_naming_the_file(tmp_path: Path, content: bytes, problem: str):
    path = tmp_path / "seg-000000000007.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorruptSegmentError, match=problem) as info:
        read_segment(path)
    assert str(path) in str(info.value)


def test_last_record_time_is_the_newest_receipt_or_gap_end(writer: SpoolWriter):
    assert last_record_time(writer.spool_dir) is None
    writer.write(lines([event(0, received_at=1_000), event(1, received_at=3_000)]))
    assert last_record_time(writer.spool_dir) == 3_000
    writer.write(lines([gap_record(2_000, 9_000, "restart", "c")]))
    assert last_record_time(writer.spool_dir) == 9_000


def test_pruning_removes_old_consumed_segments_and_keeps_the_newest(tmp_path: Path):
    spool = tmp_path / "spool"
    writer = SpoolWriter(spool)
    segments = [writer.write(lines([event(i)])) for i in range(5)]
    writer.close()
    now = 1_800_000_000.0
    for segment in segments[:4]:
        os.utime(segment.path, (now - 3 * 86_400, now - 3 * 86_400))
    os.utime(segments[4].path, (now - 3 * 86_400, now - 3 * 86_400))
    # Only what the consumer has finished with (seq <= 2) and is old enough goes.
    assert prune_segments(spool, up_to_seq=2, older_than_s=86_400, now=now) == [0, 1, 2]
    assert [s.seq for s in list_segments(spool)] == [3, 4]
    assert prune_segments(spool, up_to_seq=2, older_than_s=86_400, now=now) == []
    # Even with everything consumed and old, the newest stays, and numbering goes on after it.
    assert prune_segments(spool, up_to_seq=99, older_than_s=86_400, now=now) == [3]
    resumed = SpoolWriter(spool)
    assert resumed.write(lines([event(9)])).seq == 5
    resumed.close()


def test_recent_segments_are_kept_however_consumed(tmp_path: Path):
    writer = SpoolWriter(tmp_path / "spool")
    for i in range(3):
        writer.write(lines([event(i)]))
    writer.close()
    kept = prune_segments(tmp_path / "spool", up_to_seq=99, older_than_s=3600, now=time.time())
    assert kept == []
    assert len(list_segments(tmp_path / "spool")) == 3
