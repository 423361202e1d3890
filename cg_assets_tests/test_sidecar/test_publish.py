"""Segments published to an S3 store: read there as locally, and never lost to an outage."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cg_assets_tests.s3_harness import MotoServer
from cg_assets_tests.sidecar_harness import wait_until
from ws_sidecar.publish import Publisher
from ws_sidecar.spool import (
    SpoolWriter,
    count_records,
    encode_record,
    gap_record,
    list_segments,
    prune_segments,
    publish_segment,
    read_segment,
    segment_summary,
    segment_time_bounds,
)
from ws_sidecar.stats import Stats
from ws_sidecar.store import ObjectPath, open_store
from ws_sidecar.summary import Tally

T0 = 1_700_000_000_000


def lines(seq: int) -> list[str]:
    events = [
        {"kind": "event", "event_id": f"e{seq}-{i}", "exchange": "Binance", "pair": "BTCUSDT",
         "symbol": "BTC", "side": "long", "price": 90_000.0, "usd_value": 1_000.0 + i,
         "time": T0 + seq * 1000 + i, "received_at": T0 + seq * 1000 + i + 50, "conn_id": "c",
         "source": "ws", "raw": {}}
        for i in range(3)
    ]  # fmt: skip
    return [encode_record(e) for e in events] + [
        encode_record(gap_record(T0 + seq * 1000 + 5, T0 + seq * 1000 + 9, "test", "c"))
    ]


def write(writer: SpoolWriter, count: int) -> None:
    for _ in range(count):
        records = lines(writer.next_seq)
        writer.write(records, Tally().add_lines(records).summary(quarantined=1))


def seqs(spool: Path | ObjectPath) -> list[int]:
    return [s.seq for s in list_segments(spool)]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[SpoolWriter]:
    w = SpoolWriter(tmp_path / "spool")
    yield w
    w.close()


def test_published_segments_read_on_s3_as_they_do_locally(
    writer: SpoolWriter, s3_lake_url: str, s3_server: MotoServer
):
    write(writer, 3)
    store = open_store(s3_lake_url).path("spool")
    for segment in list_segments(writer.spool_dir):
        assert publish_segment(segment, store).path == store / segment.path.name
    # One PUT each for a segment and its summary.
    key = (store / "seg-000000000001.jsonl").path
    summary = (store / "seg-000000000001.summary.json").path
    assert s3_server.requests_for(key) == [f"PUT /{key} HTTP/1.1"]
    assert s3_server.requests_for(summary) == [f"PUT /{summary} HTTP/1.1"]
    local, remote = list_segments(writer.spool_dir), list_segments(store)
    assert [s.seq for s in remote] == [0, 1, 2]
    for here, there in zip(local, remote, strict=True):
        assert read_segment(there.path) == read_segment(here.path)
        assert segment_summary(there.path) == segment_summary(here.path)
        assert segment_summary(there.path).quarantined == 1  # the sidecar's file, not computed
        assert segment_time_bounds(there.path) == segment_time_bounds(here.path)
        assert count_records(there.path) == 4
    assert list_segments(store, after_seq=1) == remote[2:]
    # Retention on the store: the newest segment always stays.
    assert prune_segments(store, up_to_seq=5, older_than_s=0, now=1e12) == [0, 1]
    assert seqs(store) == [2]
    assert sorted(p.name for p in store.iterdir()) == [
        "seg-000000000002.jsonl",
        "seg-000000000002.summary.json",
    ]


def test_publishing_to_another_local_directory_is_atomic_too(writer: SpoolWriter, tmp_path: Path):
    write(writer, 2)
    target = tmp_path / "shared" / "spool"
    for segment in list_segments(writer.spool_dir):
        publish_segment(segment, target)
    assert seqs(target) == [0, 1]
    assert not list(target.glob(".*"))  # no temporary file left behind
    assert (
        read_segment(target / "seg-000000000001.jsonl").events
        == read_segment(writer.spool_dir / "seg-000000000001.jsonl").events
    )


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto server of this test's own, which it may stop and start again."""
    server = MotoServer()
    server.start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()
    server.remove_log()


def test_the_publisher_keeps_segments_while_the_store_is_down(
    writer: SpoolWriter, own_server: MotoServer
):
    bucket = f"cg-{uuid.uuid4().hex[:12]}"
    own_server.create_bucket(bucket)
    target = open_store(f"s3://{bucket}/root").path("spool")
    stats = Stats()
    publisher = Publisher(writer.spool_dir, target, stats)
    write(writer, 2)
    assert publisher.publish_pending() == 2
    assert seqs(target) == [0, 1]
    assert seqs(writer.spool_dir) == [1]  # published copies go; the newest stays for resuming

    own_server.stop()
    write(writer, 2)
    with pytest.raises(OSError, match=r"127\.0\.0\.1|connect|Connection"):
        publisher.publish_pending()
    assert seqs(writer.spool_dir) == [1, 2, 3]  # nothing published, nothing dropped
    kept = {s.seq: s.path.read_bytes() for s in list_segments(writer.spool_dir)}

    own_server.start()  # an empty store again: moto keeps objects in memory only
    own_server.create_bucket(bucket)
    assert publisher.publish_pending() == 2
    assert seqs(target) == [2, 3]
    assert [(target / f"seg-{n:012d}.jsonl").read_bytes() for n in (2, 3)] == [kept[2], kept[3]]
    assert seqs(writer.spool_dir) == [3]
    assert (stats.segments_published, stats.last_published_seq) == (4, 3)


@pytest.mark.slow
def test_the_sidecar_publishes_to_s3_and_catches_up_after_an_outage(
    make_sidecar, own_server: MotoServer, feed
):
    bucket = f"cg-{uuid.uuid4().hex[:12]}"
    own_server.create_bucket(bucket)
    url = f"s3://{bucket}/root"
    target = open_store(url).path("spool")
    sidecar = make_sidecar(CG_LAKE_URL=url, **own_server.env)
    before = sidecar.wait_status(
        lambda s: s["last_published_seq"] >= 2, 20, "three segments published"
    )
    assert seqs(target)[: before["last_published_seq"] + 1] == list(
        range(before["last_published_seq"] + 1)
    )

    own_server.stop()
    down = sidecar.wait_status(
        lambda s: s["last_seq"] >= s["last_published_seq"] + 3, 20, "segments piling up locally"
    )
    unpublished = [s for s in list_segments(sidecar.spool) if s.seq > down["last_published_seq"]]
    assert len(unpublished) >= 3
    kept = {s.seq: s.path.read_bytes() for s in unpublished}
    wait_until(lambda: "cannot publish spool segments" in sidecar.log(), 20, "the error logged")

    own_server.start()
    own_server.create_bucket(bucket)
    after = sidecar.wait_status(
        lambda s: s["last_published_seq"] >= max(kept), 30, "the backlog published"
    )
    assert after["last_published_seq"] >= max(kept)
    for seq, data in kept.items():
        assert (target / f"seg-{seq:012d}.jsonl").read_bytes() == data
    assert "cg-test-secret" not in sidecar.log()
    code, _ = sidecar.terminate()
    assert code == 0

    # A sidecar on a new node (an empty disk) numbers on after the store's segments.
    before = seqs(target)
    shutil.rmtree(sidecar.data_dir)
    fresh = make_sidecar(CG_LAKE_URL=url, **own_server.env)
    fresh.wait_status(
        lambda s: s["last_published_seq"] > before[-1], 20, "a segment from the new node"
    )
    # Its first segment is the store's next one: none of its segments is shadowed by an older
    # one of the same seq (the publisher would never send those).
    assert re.findall(r"next segment #(\d+)", fresh.log())[-1] == str(before[-1] + 1)
    assert min(set(seqs(target)) - set(before)) == before[-1] + 1
