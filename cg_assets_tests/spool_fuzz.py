"""Hypothesis strategies for spool segments as bad as a disk can hold them: random bytes,
records whose every field may hold any JSON value, lines reordered and duplicated. Shared by
the spool reader's fuzz tests and the sensors'."""

from __future__ import annotations

import json
import time

from hypothesis import strategies as st

NOW_MS = int(time.time() * 1000)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.integers(10**300, 10**301),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def sometimes(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, json_values)


def stamps(around: int) -> st.SearchStrategy[int]:
    """Millisecond stamps near `around`, or scaled to micro- or nanoseconds, or to seconds."""
    near = st.integers(around - 600_000, around + 60_000)
    return st.one_of(near, near, near.map(lambda t: t * 1000), near.map(lambda t: t * 10**6),
                     near.map(lambda t: t // 1000), st.integers(-(2**63), 2**63))  # fmt: skip


@st.composite
def event_records(draw: st.DrawFn, around: int = NOW_MS) -> dict:
    received = draw(sometimes(st.integers(around - 60_000, around)))
    return {
        "kind": draw(st.sampled_from(["event"]) | json_values),
        "event_id": draw(sometimes(st.text("0123456789abcdef", min_size=1, max_size=4))),
        "exchange": draw(sometimes(st.sampled_from(["Binance", "OKX"]))),
        "pair": draw(sometimes(st.just("BTCUSDT"))),
        "symbol": draw(sometimes(st.sampled_from(["BTC", "ETH"]))),
        "side": draw(sometimes(st.sampled_from(["long", "short"]))),
        "price": draw(sometimes(st.floats(0.001, 1e6))),
        "usd_value": draw(sometimes(st.floats(1.0, 1e7))),
        "time": draw(sometimes(stamps(received if isinstance(received, int) else around))),
        "received_at": received,
        "conn_id": "c1",
        "source": draw(sometimes(st.just("ws"))),
        "raw": {},
    }


@st.composite
def gap_records(draw: st.DrawFn, around: int = NOW_MS) -> dict:
    return {
        "kind": "gap",
        "start": draw(sometimes(stamps(around - 60_000))),
        "end": draw(sometimes(stamps(around))),
        "reason": "test",
        "conn_id": "c1",
    }


@st.composite
def segment_bytes(draw: st.DrawFn, around: int = NOW_MS) -> bytes:
    """One segment's bytes: JSON lines (mostly records) and junk, then reordered with
    repeats, and perhaps cut short."""
    record = event_records(around) | gap_records(around)
    lines = draw(
        st.lists(
            st.one_of(
                record.map(lambda r: json.dumps(r).encode()),
                record.map(lambda r: json.dumps(r).encode()),
                st.binary(max_size=40),
                json_values.map(lambda v: json.dumps(v).encode()),
            ),
            min_size=1,
            max_size=12,
        )
    )
    order = draw(st.lists(st.integers(0, len(lines) - 1), max_size=2 * len(lines)))
    data = b"".join(lines[i] + b"\n" for i in order)
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data
