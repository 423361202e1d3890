"""Benchmark: one tick of the heads-up sensor under a sustained 50,000 liquidations a second.

The spool is written by the sidecar's own code: the simulator's feed (`LiquidationFeed` on a
clock the benchmark moves) framed as CoinGlass pushes (`liquidationOrders`, 250 items a frame)
goes into the sidecar's `Recorder` and `SpoolSink`, which publish segments of 5,000 events,
each with its summary, just as `python -m ws_sidecar` does minus the socket. Every segment is
also hard-linked into a second spool that has no summary files, where the sensor takes the
path older segments take: every line parsed and validated, the summary computed from it. That
is what every tick did before summaries existed, and it is the baseline measured in the same
run, on the same segments.

After every `--tick-seconds` of feed (5 s: the daemon's sensor loop) the real
`liquidation_headsup_sensor` is evaluated on both spools (`evaluate_tick`, as the daemon does,
minus its gRPC hop), so each steady tick reads 50 new segments (250,000 events). At the end,
one catch-up tick on each spool reads the first 500 segments (the most a tick takes, 2.5M
events), as after a daemon restart. Both paths must find the same bursts.

Printed: the spool's size, the median / p95 / max steady tick and the catch-up tick per path,
and the ratios. Target: a tick < 200 ms with summaries.

    .venv/bin/python benchmarks/headsup_tick.py [--seconds 60] [--rate 50000] [--tick-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from cg_assets.alerts.headsup import MAX_SEGMENTS_PER_TICK, SENSOR
from cg_assets.definitions import build_defs
from cg_assets.liquidations.triggers import TriggerState
from cg_assets.settings import Settings
from cg_assets.sim import LiquidationFeed, SyntheticMarket
from cg_assets.sim.ws_protocol import CAMEL_CHANNEL, camel_items
from ws_sidecar.quarantine import Quarantine
from ws_sidecar.recorder import Recorder
from ws_sidecar.sink import SpoolSink
from ws_sidecar.spool import SpoolWriter, list_segments, summary_path
from ws_sidecar.stats import Stats

SEGMENT_EVENTS = 5_000
FRAME_ITEMS = 250
STEP_MS = 100  # the simulator pushes every 50 ms; the feed is advanced in 100 ms steps
RECEIPT_DELAY_MS = 80
TARGET_MS = 200.0


@dataclass
class SensorView:
    """One spool and the sensor's view of it."""

    name: str
    defs: dg.Definitions
    cursor: str | None = None
    ticks_ms: list[float] = field(default_factory=list)
    run_keys: set[str] = field(default_factory=set)

    def tick(self, instance: dg.DagsterInstance, cursor: str | None = None) -> float:
        """Evaluate the sensor once (from `cursor` if given, else where it left off); ms."""
        context = dg.build_sensor_context(
            cursor=cursor if cursor is not None else self.cursor,
            instance=instance,
            definitions=self.defs,
        )
        sensor = self.defs.resolve_sensor_def(SENSOR)
        # The sensor logs every burst to a console logger of its own; keep the report legible.
        with contextlib.redirect_stderr(io.StringIO()):
            started = time.perf_counter()
            result = sensor.evaluate_tick(context)
            elapsed = (time.perf_counter() - started) * 1000
        if cursor is None:
            self.cursor = result.cursor
            self.run_keys |= {r.run_key for r in result.run_requests}
        return elapsed


def defs_for(data_dir: Path) -> dg.Definitions:
    env = {"CG_DATA_DIR": str(data_dir), "CG_API_BASE_URL": "http://127.0.0.1:9"}
    return build_defs(Settings.from_env(env))


class Sidecar:
    """The sidecar from pushed frames to published segments, without the socket: its
    `Recorder` and `SpoolSink` on an event loop of this process. Segments roll at 5,000
    events only, so they come out the same however fast this machine generates the feed."""

    def __init__(self, root: Path, with_summaries: Path, without: Path) -> None:
        self.stats = Stats()
        self.sink = SpoolSink(
            SpoolWriter(with_summaries / "spool"), self.stats, SEGMENT_EVENTS, max_age_s=3600
        )
        quarantine = Quarantine(root / "quarantine.jsonl", max_bytes=2**20)
        self.recorder = Recorder(self.sink, self.stats, gap_margin_ms=0, quarantine=quarantine)
        self.source = with_summaries / "spool"
        self.bare = without / "spool"
        self.bare.mkdir(parents=True)
        self.linked = -1

    async def settle(self) -> None:
        """Wait until every full segment received is on disk, and link it into the spool
        without summaries; the writer thread then idles while a tick is measured."""
        full = self.stats.events_received // SEGMENT_EVENTS * SEGMENT_EVENTS
        while self.stats.events_written < full:
            await asyncio.sleep(0.005)
        for segment in list_segments(self.source, after_seq=self.linked):
            os.link(segment.path, self.bare / segment.path.name)
            self.linked = segment.seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="feed to generate")
    parser.add_argument("--rate", type=float, default=50_000.0, help="events per second")
    parser.add_argument("--tick-seconds", type=float, default=5.0, help="feed per steady tick")
    args = parser.parse_args()
    # The feed is generated faster than real time, so the sink pushes back now and then and
    # says so at ERROR; that is by design here.
    logging.getLogger("ws_sidecar.sink").setLevel(logging.CRITICAL)

    root = Path(tempfile.mkdtemp(prefix="cg-headsup-tick-"))
    try:
        asyncio.run(run(root, args.seconds, args.rate, args.tick_seconds))
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def run(root: Path, seconds: float, rate: float, tick_seconds: float) -> None:
    summarized, bare = root / "with-summaries", root / "without"
    paths = [
        SensorView("summaries", defs_for(summarized)),
        SensorView("full parse", defs_for(bare)),
    ]
    sidecar = Sidecar(root, summarized, bare)
    writer = asyncio.create_task(sidecar.sink.run())
    # The feed ends where the wall clock stood at the start, so no event lies after the
    # sensor's clock.
    end_ms = time.time_ns() // 1_000_000
    clock_ms = end_ms - int(seconds * 1000)
    feed = LiquidationFeed(
        SyntheticMarket(seed=7), seed=5, rate_per_s=rate, history_s=5, clock=lambda: clock_ms
    )
    feed.burst("BTC", 8e6, 40)  # one planted cascade, so both paths have a burst to find
    print(f"writing {seconds:g} s of feed at {rate:,.0f} events/s to {root} ...")
    started = time.perf_counter()
    with dg.instance_for_test() as instance:
        for path in paths:
            path.tick(instance)  # a new sensor starts at the spool's (empty) end
        next_tick = clock_ms + int(tick_seconds * 1000)
        while clock_ms < end_ms:
            clock_ms = min(clock_ms + STEP_MS, end_ms)
            batch = feed.advance(clock_ms)
            for lo in range(0, len(batch), FRAME_ITEMS):
                items = camel_items(batch.take(slice(lo, lo + FRAME_ITEMS)))
                text = json.dumps({"channel": CAMEL_CHANNEL, "data": items})
                await sidecar.recorder.on_message(text, "bench-1", clock_ms + RECEIPT_DELAY_MS)
            if clock_ms >= next_tick:
                next_tick += int(tick_seconds * 1000)
                await sidecar.settle()
                for path in paths:
                    path.ticks_ms.append(path.tick(instance))
        sidecar.sink.close()
        await writer
        await sidecar.settle()
        written_s = time.perf_counter() - started - sum(sum(p.ticks_ms) for p in paths) / 1000
        catch_up = TriggerState().to_cursor()  # from the spool's start, as after a restart
        catch_up_ms = [path.tick(instance, catch_up) for path in paths]
    assert sidecar.stats.quarantined_items == 0
    report(root, sidecar.stats, paths, catch_up_ms, rate, tick_seconds, written_s)


def report(
    root: Path,
    stats: Stats,
    paths: list[SensorView],
    catch_up_ms: list[float],
    rate: float,
    tick_seconds: float,
    written_s: float,
) -> None:
    spool = root / "with-summaries" / "spool"
    segment_bytes = sum(p.stat().st_size for p in spool.glob("seg-*.jsonl"))
    summary_bytes = sum(summary_path(p).stat().st_size for p in spool.glob("seg-*.jsonl"))
    per_tick = rate * tick_seconds
    print(
        f"spool: {stats.events_written:,} events in {stats.segments_written:,} segments"
        f" ({segment_bytes / 2**20:,.0f} MiB; summaries {summary_bytes / 2**20:,.1f} MiB),"
        f" written in {written_s:,.1f} s"
    )
    print(
        f"\nsteady ticks: {len(paths[0].ticks_ms)}, each after {tick_seconds:g} s of feed"
        f" (~{per_tick / SEGMENT_EVENTS:,.0f} segments, ~{per_tick:,.0f} events)"
    )
    print(f"{'path':12} {'median ms':>10} {'p95 ms':>10} {'max ms':>10} {'catch-up ms':>12}")
    for path, catch_up in zip(paths, catch_up_ms, strict=True):
        ticks = sorted(path.ticks_ms)
        p95 = ticks[min(len(ticks) - 1, round(0.95 * (len(ticks) - 1)))]
        print(
            f"{path.name:12} {statistics.median(ticks):>10,.1f} {p95:>10,.1f}"
            f" {ticks[-1]:>10,.1f} {catch_up:>12,.1f}"
        )
    fast, slow = paths
    ratio = statistics.median(slow.ticks_ms) / statistics.median(fast.ticks_ms)
    print(
        f"\nratio full parse / summaries: steady median {ratio:,.0f}x,"
        f" catch-up ({MAX_SEGMENTS_PER_TICK} segments) {catch_up_ms[1] / catch_up_ms[0]:,.0f}x"
    )
    worst = max(max(fast.ticks_ms), catch_up_ms[0])
    verdict = "met" if worst < TARGET_MS else "NOT met"
    print(f"target: every tick < {TARGET_MS:.0f} ms with summaries: {verdict} (worst {worst:,.1f})")
    same = "the same run keys" if fast.run_keys == slow.run_keys else "DIFFERENT run keys"
    print(f"bursts found: {len(fast.run_keys)} with summaries, {len(slow.run_keys)} by full parse"
          f" ({same})")  # fmt: skip
    if fast.run_keys != slow.run_keys or not fast.run_keys:
        raise SystemExit("the two paths must find the same, non-empty set of bursts")


if __name__ == "__main__":
    main()
