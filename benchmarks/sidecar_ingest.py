"""Benchmark: how many liquidations a second the sidecar makes durable, against a bare client.

The WebSocket simulator runs in this process and pushes at rising rates (default 10k, 25k,
50k and 75k events/s, each for `--seconds`, 60 by default). At each rate the real sidecar
(`python -m ws_sidecar`) runs as a subprocess with production settings, then a bare
`websockets` receive loop that discards every frame (the ceiling: what the protocol alone
costs). Printed per rate and client:

- loss: events the simulator sent vs events in the spool (the bare client has no spool; it
  passes when it keeps up),
- drain: seconds after the feed stops until everything sent is durable; a client that falls
  behind shows it here (and in its latency), since the simulator queues rather than drops,
- send -> durable latency, p50/p99: the simulator's send time of a sample of frames against
  the time the segment holding their first event was renamed into place (its ctime),
- CPU (cores) and peak RSS (VmHWM from /proc) of the client process, and the CPU of this
  process (the simulator), which shares the machine's two cores with the client.

A rate is sustained when nothing is lost and the backlog drains within DRAIN_LIMIT_S.
Targets on a 2-core machine: >= 50,000 events/s sustained for 60 s, p99 <= 1.5 s, RSS <= 300 MB.

    .venv/bin/python benchmarks/sidecar_ingest.py [--seconds 60] [--rates 10000,25000,50000,75000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cg_assets.sim import LiquidationFeed, SyntheticMarket, WsSimulator
from ws_sidecar.parse import event_id
from ws_sidecar.spool import list_segments

REPO = Path(__file__).resolve().parents[1]
DRAIN_LIMIT_S = 3.0
DRAIN_TIMEOUT_S = 60.0
LATENCY_SAMPLES = 2000
TARGET_RATE, TARGET_P99_S, TARGET_RSS_MB = 50_000, 1.5, 300
_EVENT_ID_RE = re.compile(rb'"event_id":"([0-9a-f]{16})"')
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    client: str
    rate: int
    seconds: float
    sent: int
    generated: int
    spooled: int | None
    drain_s: float | None
    cpu: float
    rss_mb: float
    sim_cpu: float
    p50_s: float | None = None
    p99_s: float | None = None

    HEADER = (
        f"{'client':8} {'rate/s':>7} {'sent':>10} {'spooled':>10} {'drain s':>8}"
        f" {'p50 s':>6} {'p99 s':>6} {'cpu':>5} {'RSS MB':>7} {'sim cpu':>7}  sustained"
    )

    def row(self) -> str:
        return (
            f"{self.client:8} {self.rate:>7,} {self.sent:>10,} {_opt(self.spooled, ',d'):>10}"
            f" {_opt(self.drain_s, '.2f'):>8} {_opt(self.p50_s, '.2f'):>6}"
            f" {_opt(self.p99_s, '.2f'):>6} {self.cpu:>5.2f} {self.rss_mb:>7.0f}"
            f" {self.sim_cpu:>7.2f}  {self.verdict}"
        )

    @property
    def offered(self) -> bool:
        """Whether the simulator produced the rate at all (a starved machine cannot)."""
        return self.generated >= 0.95 * self.rate * self.seconds

    @property
    def verdict(self) -> str:
        if not self.offered:
            produced = self.generated / self.seconds
            return f"INVALID: the simulator produced {produced:,.0f}/s (machine overloaded?)"
        return "yes" if self.sustained else "NO"

    @property
    def sustained(self) -> bool:
        kept_up = self.drain_s is not None and self.drain_s <= DRAIN_LIMIT_S
        lossless = self.sent == self.generated and self.spooled in (None, self.sent)
        return self.offered and kept_up and lossless


# --------------------------------------------------------------------------- bare client

# Run with `python -c` so that it imports nothing but websockets: its RSS is the floor.
BARE_CLIENT = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url):
    async with connect(url, ping_interval=None, max_size=64 * 2**20) as ws:
        await ws.send(json.dumps({"method": "subscribe", "channels": ["liquidationOrders"]}))
        async for _ in ws:
            pass

asyncio.run(main(sys.argv[1]))
"""


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


# --------------------------------------------------------------------------- one step


class Bench:
    def __init__(
        self, sim: WsSimulator, feed: LiquidationFeed, seconds: float, workdir: Path
    ) -> None:
        self.sim = sim
        self.feed = feed
        self.seconds = seconds
        self.workdir = workdir

    def run(self, client: str, rate: int) -> Result:
        """One client at one rate; its data directory is removed after, its log kept."""
        data_dir = self.workdir / f"{client}-{rate}"
        try:
            proc = self._start(client, data_dir)
            try:
                result = self._measure(client, rate, proc, data_dir / "spool")
            finally:
                self._stop(client, proc)
            print(result.row(), flush=True)
            return result
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    @staticmethod
    def _stop(client: str, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM for the sidecar, which must exit 0 (it flushes); the bare loop is killed."""
        if client != "sidecar":
            proc.kill()
            proc.wait(10)
            return
        proc.send_signal(signal.SIGTERM)
        if proc.wait(10) != 0:
            raise RuntimeError(f"the sidecar exited with {proc.returncode} on SIGTERM")

    def _start(self, client: str, data_dir: Path) -> subprocess.Popen[bytes]:
        subscriptions = self.sim.stats.subscriptions
        env = {
            **os.environ,
            "CG_WS_URL": self.sim.url,
            "CG_DATA_DIR": str(data_dir),
            "SIDECAR_HEALTH_PORT": "0",
            "PYTHONPATH": str(REPO),
        }
        if client == "sidecar":
            command = [sys.executable, "-m", "ws_sidecar"]
        else:
            command = [sys.executable, "-c", BARE_CLIENT, self.sim.url]
        log_path = data_dir.with_suffix(".log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while self.sim.stats.subscriptions == subscriptions:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{client} did not subscribe; see {log_path}")
            time.sleep(0.05)
        time.sleep(0.5)  # the first ping/pong and start-up work out of the way
        return proc

    def _measure(
        self, client: str, rate: int, proc: subprocess.Popen[bytes], spool: Path
    ) -> Result:
        sim, feed = self.sim, self.feed
        sent0, seq0, frames0 = sim.stats.events_sent, feed.last_seq, len(sim.stats.sent)
        cpu0, started = cpu_seconds(proc.pid), time.monotonic()
        sim_cpu0 = time.process_time()
        feed.rate_per_s = rate
        time.sleep(self.seconds)
        feed.rate_per_s = 0
        stopped = time.monotonic()
        cpu = (cpu_seconds(proc.pid) - cpu0) / (stopped - started)
        sim_cpu = (time.process_time() - sim_cpu0) / (stopped - started)
        drained_at, spooled = self._drain(spool if client == "sidecar" else None, sent0, seq0)
        result = Result(
            client,
            rate,
            self.seconds,
            sim.stats.events_sent - sent0,
            feed.last_seq - seq0,
            spooled,
            None if drained_at is None else drained_at - stopped,
            cpu,
            peak_rss_mb(proc.pid),
            sim_cpu,
        )
        if client == "sidecar" and spooled:
            result.p50_s, result.p99_s = self._latency(spool, sim.stats.sent[frames0:], seq0)
        return result

    def _drain(self, spool: Path | None, sent0: int, seq0: int) -> tuple[float | None, int | None]:
        """When everything generated was sent (and spooled), or None on timeout; and how many
        events the spool holds (None without a spool)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        counter = None if spool is None else SpoolCounter(spool)
        spooled = None
        while time.monotonic() < deadline:
            generated = self.feed.last_seq - seq0
            sent = self.sim.stats.events_sent - sent0
            if counter is not None:
                spooled = counter.count()
            if sent >= generated and (spooled is None or spooled >= sent):
                return time.monotonic(), spooled
            time.sleep(0.05)
        return None, spooled

    def _latency(self, spool: Path, frames: list, seq0: int) -> tuple[float, float]:
        """p50/p99 of (segment ctime - send time) over a sample of frames' first events."""
        step = max(1, len(frames) // LATENCY_SAMPLES)
        sample = frames[::step]
        history = self.feed.query(-(2**62), 2**62)
        history = history.take(history.seq > seq0)
        index = np.searchsorted(history.seq, [f.seq[0] for f in sample])
        picked = history.take(index)
        sent_at = {
            event_id(ex, pair, t, price, "long" if long_ else "short", usd).encode(): f.sent_at_ms
            for f, ex, pair, t, price, long_, usd in zip(
                sample,
                picked.exchanges(),
                picked.pairs(),
                picked.time.tolist(),
                picked.price.tolist(),
                picked.long.tolist(),
                picked.usd_value.tolist(),
                strict=True,
            )
        }
        latencies = []
        for segment in list_segments(spool):
            durable_ms = segment.path.stat().st_ctime_ns / 1e6
            for found in _EVENT_ID_RE.findall(segment.path.read_bytes()):
                if found in sent_at:
                    latencies.append((durable_ms - sent_at[found]) / 1000)
        p50, p99 = np.percentile(latencies, [50, 99])
        return float(p50), float(p99)


class SpoolCounter:
    """Events in a growing spool, reading each segment once."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.events = 0
        self._last_seq = -1

    def count(self) -> int:
        for segment in list_segments(self.spool, after_seq=self._last_seq):
            self.events += segment.path.read_bytes().count(b'{"kind":"event"')
            self._last_seq = segment.seq
        return self.events


# --------------------------------------------------------------------------- report


def report(results: list[Result], seconds: float) -> None:
    print(f"\n{Result.HEADER}")
    for r in results:
        print(r.row())
    by_client = {c: [r for r in results if r.client == c] for c in ("sidecar", "bare")}
    best = {c: max((r.rate for r in rs if r.sustained), default=0) for c, rs in by_client.items()}
    print(
        f"\nhighest sustained rate ({seconds:g} s, zero loss): sidecar {best['sidecar']:,}/s,"
        f" bare loop {best['bare']:,}/s = {_ratio(best['sidecar'], best['bare'])}"
    )
    for side, bare in zip(by_client["sidecar"], by_client["bare"], strict=True):
        print(
            f"at {side.rate:>6,}/s sidecar / bare loop: CPU {_ratio(side.cpu, bare.cpu)},"
            f" peak RSS {_ratio(side.rss_mb, bare.rss_mb)}"
        )
    target = [r for r in by_client["sidecar"] if r.rate == TARGET_RATE]
    met = bool(target) and all(
        r.sustained and (r.p99_s or 99) <= TARGET_P99_S and r.rss_mb <= TARGET_RSS_MB
        for r in target
    )
    print(
        f"target ({TARGET_RATE:,}/s sustained, p99 <= {TARGET_P99_S} s,"
        f" RSS <= {TARGET_RSS_MB} MB): {'met' if met else 'NOT met'}"
    )


def _opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each rate")
    parser.add_argument("--rates", default="10000,25000,50000,75000")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    # History must hold a whole step, for matching sampled frames to their events.
    feed = LiquidationFeed(
        SyntheticMarket(seed=7),
        seed=1,
        rate_per_s=0,
        max_events=int(max(rates) * args.seconds * 1.2) + 100_000,
    )
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    print(f"logs in {workdir}\n{Result.HEADER}", flush=True)
    with WsSimulator(feed, require_key=False, record_sent=True) as sim:
        bench = Bench(sim, feed, args.seconds, workdir)
        for rate in rates:
            for client in ("sidecar", "bare"):
                results.append(bench.run(client, rate))
                sim.stats.sent.clear()
    report(results, args.seconds)


if __name__ == "__main__":
    main()
