"""The spool's on-disk format: atomic segments and their summaries, resumed numbering, the
reader API and its tolerance of bad lines."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cg_assets_tests.spool_fuzz import event_records, segment_bytes
from ws_sidecar.parse import normalize_ws_item, parse_frame
from ws_sidecar.spool import (
    SegmentContents,
    SpoolBusyError,
    SpoolWriter,
    encode_record,
    encode_ws_event,
    gap_record,
    last_record_time,
    list_segments,
    prune_segments,
    read_segment,
    read_summary_file,
    segment_summary,
    segment_time_bounds,
    summary_path,
)
from ws_sidecar.summary import Tally, parse_summary
from ws_sidecar.validate import (
    MAX_MS,
    READER_WINDOW,
    _event_reason,
    event_problem,
    gap_problem,
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
    return normalize_ws_item({**ITEM, "time": ITEM["time"] + i}, "abc-1", received_at)


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


GOOD = encode_record(event(0)).encode()


def ws_event_keys() -> set[str]:
    return set(event(0))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b'{"kind":"ev', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 100_000, "not JSON"),
        (b'{"kind":"mystery"}', "not an event or gap record (kind 'mystery')"),
        (GOOD.replace(b'"time":1700000000000', b'"time":1700000000000000'), "time must be"),
        (GOOD.replace(b'"time":1700000000000', b'"time":1699800000000'), "outside its receipt"),
        (GOOD.replace(b'"price":3012.45', b'"price":-1'), "price must be a finite number > 0"),
        (GOOD.replace(b'"side":"long"', b'"side":"up"'), "side must be 'long' or 'short'"),
        (GOOD.replace(b'"symbol":"ETH"', b'"symbol":""'), "symbol must be a non-empty string"),
        (b'{"kind":"gap","start":5,"end":4}', "start <= end"),
    ],
)
def test_an_unusable_line_is_skipped_with_its_reason(tmp_path: Path, bad: bytes, problem: str):
    path = tmp_path / "seg-000000000007.jsonl"
    path.write_bytes(GOOD + b"\n" + bad + b"\n" + GOOD + b"\n")
    contents = read_segment(path)
    assert len(contents.events) == 2
    [skipped] = contents.skipped
    assert skipped.line == 2
    assert problem in skipped.reason
    assert len(skipped.text) <= 201


def test_a_truncated_or_empty_segment_reads_as_far_as_it_goes(tmp_path: Path):
    path = tmp_path / "seg-000000000007.jsonl"
    path.write_bytes(GOOD + b"\n" + GOOD[:40])
    contents = read_segment(path)
    assert len(contents.events) == 1
    assert [s.line for s in contents.skipped] == [2]
    path.write_bytes(b"")
    assert read_segment(path) == SegmentContents()


def test_last_record_time_is_the_newest_receipt_or_gap_end(writer: SpoolWriter):
    t = ITEM["time"]
    assert last_record_time(writer.spool_dir) is None
    writer.write(lines([event(0, received_at=t + 1_000), event(1, received_at=t + 3_000)]))
    assert last_record_time(writer.spool_dir) == t + 3_000
    writer.write(lines([gap_record(t + 2_000, t + 9_000, "restart", "c")]))
    assert last_record_time(writer.spool_dir) == t + 9_000


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


def summarized(records: list[dict]) -> tuple[list[str], object]:
    """Lines and the summary the sidecar writes with them."""
    encoded = lines(records)
    return encoded, Tally().add_lines(encoded).summary(quarantined=2)


def test_each_segment_is_published_with_its_summary(writer: SpoolWriter):
    records = [event(0), gap_record(ITEM["time"] - 9, ITEM["time"] - 1, "restart", "c"), event(1)]
    encoded, summary = summarized(records)
    segment = writer.write(encoded, summary)
    assert sorted(p.name for p in writer.spool_dir.iterdir()) == [
        "seg-000000000000.jsonl",
        "seg-000000000000.summary.json",
    ]
    assert read_summary_file(segment.path) == summary
    assert (summary.events, summary.gaps, summary.quarantined) == (2, 1, 2)
    assert segment_time_bounds(segment.path) == (ITEM["time"] - 9, 1_700_000_000_500)
    # Without its file, the same summary is computed from the segment (bar the quarantine
    # count, which only the sidecar knew).
    summary_path(segment.path).unlink()
    assert segment_summary(segment.path).coin_minutes == summary.coin_minutes
    assert segment_time_bounds(segment.path) == (ITEM["time"] - 9, 1_700_000_000_500)


@pytest.mark.parametrize(
    "damage",
    [b"", b"{", b'{"version":2}', b'{"version":1,"events":-1}', b"[]"],
)
def test_a_damaged_summary_is_ignored_in_favour_of_the_segment(writer: SpoolWriter, damage):
    encoded, summary = summarized([event(0), event(1)])
    segment = writer.write(encoded, summary)
    summary_path(segment.path).write_bytes(damage)
    assert read_summary_file(segment.path) is None
    assert segment_summary(segment.path).coin_minutes == summary.coin_minutes


def test_a_summary_is_replaced_when_its_segment_failed_to_publish(
    writer: SpoolWriter, monkeypatch: pytest.MonkeyPatch
):
    """The summary is renamed just before its segment; if the segment then fails, the retry
    (same seq) replaces it, so a published segment's summary is always its own."""
    real_rename = os.rename

    def fail_segments(src: str, dst: str) -> None:
        if str(dst).endswith(".jsonl"):
            raise OSError("simulated crash before rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_segments)
    with pytest.raises(OSError, match="simulated"):
        writer.write(*summarized([event(0)]))
    monkeypatch.undo()
    encoded, summary = summarized([event(5), event(6)])
    segment = writer.write(encoded, summary)
    assert segment.seq == 0
    assert read_summary_file(segment.path) == summary


def test_a_restarted_writer_removes_summaries_without_a_segment(tmp_path: Path):
    spool = tmp_path / "spool"
    first = SpoolWriter(spool)
    kept = first.write(*summarized([event(0)]))
    first.close()
    orphan = summary_path(spool / "seg-000000000001.jsonl")
    orphan.write_text(summarized([event(1)])[1].to_json())  # killed between the two renames
    (spool / ".seg-1.summary.tmp").write_text("{")
    SpoolWriter(spool).close()
    assert sorted(p.name for p in spool.iterdir()) == [
        kept.path.name,
        summary_path(kept.path).name,
    ]


def test_pruning_deletes_a_segments_summary_with_it(tmp_path: Path):
    writer = SpoolWriter(tmp_path / "spool")
    segments = [writer.write(*summarized([event(i)])) for i in range(3)]
    writer.close()
    now = 1_800_000_000.0
    for segment in segments:
        os.utime(segment.path, (now - 3 * 86_400, now - 3 * 86_400))
    assert prune_segments(tmp_path / "spool", up_to_seq=1, older_than_s=86_400, now=now) == [0, 1]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [
        segments[2].path.name,
        summary_path(segments[2].path).name,
    ]


def test_time_bounds_skip_unusable_ends_and_an_unusable_segment_has_none(tmp_path: Path):
    path = tmp_path / "seg-000000000003.jsonl"
    poison = GOOD.replace(b'"time":1700000000000', b'"time":1700000000000000')
    path.write_bytes(b"garbage\n" + poison + b"\n" + GOOD + b"\n" + poison + b"\n")
    assert segment_time_bounds(path) == (1_700_000_000_000, 1_700_000_000_500)
    path.write_bytes(poison + b"\n")
    assert segment_time_bounds(path) is None
    assert segment_time_bounds(tmp_path / "seg-000000000009.jsonl") is None  # pruned meanwhile


@settings(max_examples=150, deadline=None)
@given(data=segment_bytes())
def test_any_bytes_on_disk_are_read_without_raising(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seg-000000000001.jsonl"
        path.write_bytes(data)
        contents = read_segment(path)
        assert all(event_problem(e) is None for e in contents.events)
        assert all(gap_problem(g) is None for g in contents.gaps)
        assert len(contents.events) + len(contents.gaps) + len(contents.skipped) == data.count(
            b"\n"
        ) + (not data.endswith(b"\n") and data != b"")
        bounds = segment_time_bounds(path)
        if bounds is not None:
            assert 0 < bounds[0] <= bounds[1] <= MAX_MS
        summary = segment_summary(path)
        assert summary.events <= len(contents.events)
        assert summary.skipped == len(contents.skipped)
        assert parse_summary(summary.to_json()) == summary


@given(record=event_records(), missing=st.sets(st.sampled_from(sorted(ws_event_keys()))))
def test_the_quick_event_check_agrees_with_the_field_by_field_one(record: dict, missing: set):
    """`event_problem` passes a usable record in one expression and searches for the reason
    only on failure; the search must find one exactly when the expression failed."""
    record = {k: v for k, v in record.items() if k not in missing}
    reason = _event_reason(record, READER_WINDOW)
    assert (event_problem(record) is None) == reason.startswith("unusable event")
