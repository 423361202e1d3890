"""Soak: the whole system as `make demo` runs it, for a long time, under a schedule of faults.

`cg_assets.demo.start_system` starts what `make demo` starts (cg-sim with REST, WebSocket and
the Telegram stand-in, the sidecar, `dagster dev` with its daemon and every sensor), in a
temporary data dir; the demo's backfill and hand-over to the schedules follow. Then, for
`--minutes` at `--rate` liquidations per second, it plants large single orders (bursts), one
poison item a minute, and these faults, triggered from here through the simulators' control
routes (`/_sim/ws/*`, `/_sim/faults`, `/_sim/outage`) or by signals:

- a server-side WebSocket close every 2 minutes, and one 60 s ping silence;
- REST 5xx bursts, one of them right after a close, while the next ingestion gap-fills;
- one Dagster run worker killed -9 (a running ingestion run's process, caught in its gap fill);
- the sidecar killed -9 once. `make demo` does not restart it (its launcher stops everything
  when a child dies; keeping the sidecar up is the service manager's job in production), so
  the soak restarts it, as such a manager would, 5 s later;
- a Telegram 429 storm and a 30 s Telegram outage (every Bot API call answered 502).

After the schedule the faults are off and the system drains (`--drain-minutes` at most), then
it prints: events sent vs stored in `liquidation_orders` (lost; duplicated: one event id
stored twice), planted bursts vs the heads-ups and verdicts the stand-in received (lost,
duplicated unflagged), digests per bar (missing, repeated), quarantined vs poison items
sent, wedged runs (QUEUED/STARTED longer than `--wedged-after-s` at the end), RSS growth of
each process (from the end of the first minute to the end) and Dagster storage growth. The
last line is the verdict against the targets (0 lost, 0 unflagged duplicates, 0 wedged, RSS
growth < 50 MB for every product process; the simulator, a test double that keeps its feed's
history, is shown but not judged). Exit status 1 when a target is missed.

A burst planted while the sidecar had no live subscription reaches `liquidation_orders` by gap
fill, never the spool. The heads-up sensor learns of it from the ingestion run that filled the
gap and warns late, but only while the order's minute is among the last three (older bursts
are history, as for the live stream), so such bursts are counted apart: their late heads-ups
are shown, none is owed.

"Sent" means every event the simulator's feed generated in the measured window for the
configured coins and exchanges: what the product promises to keep, live or by REST gap fill
(outside them it keeps only what the WebSocket delivered). Poison items are extra broken
copies of real events, not feed events.

At 2,000 events/s the feed holds ~400 times the demo's liquidation volume, so the heads-up
limits are raised with it (HEADSUP_SINGLE_USD $50M, HEADSUP_MINUTE_USD out of reach) and the
planted orders are $60M; cooldowns and dedup are off, as in alert_latency.py, so that every
planted burst is owed its own heads-up and verdict.

    .venv/bin/python benchmarks/soak.py [--minutes 20] [--rate 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from cg_assets.demo import (
    Handover,
    Ports,
    launch_backfill,
    newest_day,
    simulator_env,
    start_sidecar,
    start_system,
)
from cg_assets.launcher import Launcher
from cg_assets.liquidations import INGEST_JOB
from cg_assets.liquidations.assets import ASSET as ORDERS
from cg_assets.liquidations.orders import SCHEMA
from cg_assets.market.schedules import JOB_NAME as MARKET_JOB
from cg_assets.settings import Settings
from cg_assets.storage import IngestedRanges, Lake
from cg_assets.storage.ingested import covers
from ws_sidecar.parse import event_id
from ws_sidecar.quarantine import QUARANTINE_FILE
from ws_sidecar.spool import list_segments, segment_summary

BURST_USD = 60_000_000
HEADSUP_SINGLE_USD = 50_000_000
HEADSUP_MINUTE_USD = 10**15
RSS_TARGET_MB = 50.0
COOLDOWNS = ("DEDUP", "COOLDOWN_HIGH", "COOLDOWN_MEDIUM", "COOLDOWN_LOW")
PID_LINE = "Executing steps in process (pid: "
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
REPEAT_MARK = "↻ Possible repeat"
MINUTE_S = 60.0
SLOW_ACTIONS = ("kill_worker", "kill_sidecar")
PER_RUN = ("run worker", "run step")
HOUR_MS = 3_600_000


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True, order=True)
class Step:
    """One scheduled action, `at_s` seconds into the load phase."""

    at_s: float
    action: str  # see Soak.do
    arg: Any = field(default=None, compare=False)


def fault_schedule(duration_s: float, ws_close_every_s: float = 120.0) -> list[Step]:
    """The faults of a soak of `duration_s`, placed at fixed fractions of it, so a short CI
    soak gets one of each kind and a long one the same shape stretched; closes repeat every
    `ws_close_every_s`. Each fault that is switched on is switched off again in the schedule.
    """
    d = duration_s
    steps = [Step(t, "ws_close") for t in _every(ws_close_every_s, d)]
    silence = min(60.0, d / 6)
    fill = min(90.0, d / 4)
    steps += [
        Step(0.12 * d, "rest_5xx", 0.5),
        Step(0.12 * d + min(30.0, d / 8), "rest_5xx", 0.0),
        Step(0.20 * d, "telegram_429", 10),
        Step(0.30 * d, "ping_silence", True),
        Step(0.30 * d + silence, "ping_silence", False),
        Step(0.45 * d, "ws_close"),
        Step(0.45 * d + 1, "rest_5xx", 0.5),
        Step(0.45 * d + 1 + fill, "rest_5xx", 0.0),
        Step(0.60 * d, "kill_worker"),
        Step(0.70 * d, "kill_sidecar"),
        Step(0.80 * d, "telegram_outage", min(30.0, d / 6)),
    ]
    return sorted(steps)


def burst_schedule(duration_s: float, coins: Sequence[str], per_20_min: int = 30) -> list[Step]:
    """`per_20_min` planted bursts per 20 minutes (at least 3), evenly spaced from the first
    minute to a minute before the end, rotating over `coins`."""
    count = max(3, math.ceil(per_20_min * duration_s / 1200))
    span = max(duration_s - 2 * MINUTE_S, duration_s / 2)
    start = min(MINUTE_S, duration_s / 4)
    gap = span / count
    return [Step(start + i * gap, "burst", coins[i % len(coins)]) for i in range(count)]


def poison_schedule(duration_s: float, every_s: float = MINUTE_S) -> list[Step]:
    """One poison item every `every_s`, alternating the two ways the simulator breaks one."""
    kinds = ("microseconds", "negative_price")
    times = [every_s / 2 + i * every_s for i in range(max(1, int(duration_s // every_s)))]
    return [Step(t, "poison", kinds[i % 2]) for i, t in enumerate(times)]


def _every(period_s: float, duration_s: float) -> list[float]:
    return [
        period_s * i for i in range(1, int(duration_s // period_s) + 1) if period_s * i < duration_s
    ]


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class EventFigures:
    sent: int
    stored: int  # distinct ids of sent events that were stored
    lost: int
    duplicated: int  # rows beyond the first of one event id, in the whole table
    unmatched: int  # stored rows in the window and scope that match no sent event
    rows: int  # every row of the table (WebSocket events outside the scope included)


def event_figures(
    sent_ids: set[str], window_ids: Iterable[str], duplicated: int, rows: int
) -> EventFigures:
    stored = set(window_ids)
    matched = len(sent_ids & stored)
    return EventFigures(
        len(sent_ids), matched, len(sent_ids) - matched, duplicated, len(stored - sent_ids), rows
    )


@dataclass
class BurstOutcome:
    coin: str
    time_ms: int
    live: bool = True  # the order reached the spool from the WebSocket (what heads-ups read)
    headsups: int = 0
    headsups_flagged: int = 0
    verdicts: int = 0
    verdicts_flagged: int = 0


def headsup_matches(message: Mapping[str, Any], coin: str, minute: str) -> bool:
    """Whether `message` is the heads-up of `coin` for `minute` (HH:MM UTC), a flagged repeat
    included. A coin fires once a minute, on its first order over the limit, so a planted
    order that shares its minute with an earlier big one is covered by that one's heads-up."""
    plain = message["plain"]
    return f"⚡ {coin} liquidation burst:" in plain and f"at {minute} UTC" in plain


def burst_outcomes(
    bursts: Sequence[tuple[str, int]],
    messages: Sequence[Mapping[str, Any]],
    live: Iterable[tuple[str, int]] | None = None,
) -> list[BurstOutcome]:
    """Per planted burst (coin, order time ms): the heads-ups and verdicts received, and
    whether it is among the `live` orders (all are, if None)."""
    seen = None if live is None else set(live)
    outcomes = []
    for coin, time_ms in bursts:
        minute = datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%H:%M")
        outcome = BurstOutcome(coin, time_ms, seen is None or (coin, time_ms) in seen)
        heads = [m for m in messages if headsup_matches(m, coin, minute)]
        ids = {m["message_id"] for m in heads}
        for m in heads:
            outcome.headsups += 1
            outcome.headsups_flagged += m["plain"].startswith(REPEAT_MARK)
        for m in messages:
            if m["reply_to"] in ids:
                outcome.verdicts += 1
                outcome.verdicts_flagged += m["plain"].startswith(REPEAT_MARK)
        outcomes.append(outcome)
    return outcomes


def unflagged_extra(count: int, flagged: int) -> int:
    """Copies beyond the first that carry no possible-repeat notice."""
    return max(0, count - 1 - flagged) if count else 0


def digest_key(message: Mapping[str, Any]) -> tuple[str, str, bool] | None:
    """(coin, bar line, flagged) of a digest message, or None for any other message."""
    plain = message["plain"]
    if message["reply_to"] or "not financial advice" not in plain or " bar " not in plain:
        return None
    lines = plain.splitlines()
    flagged = lines[0].startswith(REPEAT_MARK)
    lines = lines[1:] if flagged else lines
    coin = lines[0].split(" · ")[0].split(" ")[-1]
    bar = next(line for line in lines if " bar " in line)
    return coin, bar.split(" bar ", 1)[1], flagged


def bar_label(bar_open_ms: int) -> str:
    """How a digest names the bar opening at `bar_open_ms` (cg_assets.alerts.messages)."""
    return datetime.fromtimestamp(bar_open_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class DigestFigures:
    per_bar: dict[str, int]  # digests received per bar
    missing: list[str]  # refreshed bars without any digest
    repeated: int  # unflagged copies of one coin's digest of one bar


def digest_figures(messages: Sequence[Mapping[str, Any]], expected: Iterable[str]) -> DigestFigures:
    copies: Counter[tuple[str, str]] = Counter()
    flagged: Counter[tuple[str, str]] = Counter()
    for message in messages:
        key = digest_key(message)
        if key is not None:
            copies[key[:2]] += 1
            flagged[key[:2]] += key[2]
    per_bar: Counter[str] = Counter()
    for (_, bar), n in copies.items():
        per_bar[bar] += n
    repeated = sum(unflagged_extra(n, flagged[k]) for k, n in copies.items())
    return DigestFigures(
        dict(sorted(per_bar.items())), sorted(set(expected) - set(per_bar)), repeated
    )


@dataclass(frozen=True)
class RssSample:
    at_s: float
    pid: int
    role: str
    rss_mb: float


def rss_growth(
    samples: Sequence[RssSample], settle_s: float
) -> dict[tuple[int, str], tuple[float, float]]:
    """Per long-lived process (pid, role): its RSS at the first sample at least `settle_s`
    after it was first seen (the end of its first minute) and at its last sample. A run's own
    processes (PER_RUN) are left out: they hold one batch and exit with their run, so their
    size is a peak (`per_run_peak_mb`), not growth; so are processes seen for less than
    `settle_s`."""
    by_pid: dict[tuple[int, str], list[RssSample]] = {}
    for s in samples:
        if s.role not in PER_RUN:
            by_pid.setdefault((s.pid, s.role), []).append(s)
    growth = {}
    for key, series in by_pid.items():
        first = series[0].at_s
        settled = [s for s in series if s.at_s >= first + settle_s]
        if settled and settled[-1].at_s > settled[0].at_s:
            growth[key] = (settled[0].rss_mb, settled[-1].rss_mb)
    return growth


def per_run_peak_mb(samples: Sequence[RssSample]) -> tuple[int, float]:
    """How many per-run processes were seen, and the largest RSS any of them had."""
    runs = [s for s in samples if s.role in PER_RUN]
    return len({s.pid for s in runs}), max((s.rss_mb for s in runs), default=0.0)


def process_role(cmdline: str) -> str:
    """A readable name for one of the system's processes, from its command line."""
    for needle, role in (
        ("cg-sim", "simulator"),
        ("ws_sidecar", "sidecar"),
        ("dagster-webserver", "webserver"),
        ("dagster_webserver", "webserver"),
        ("dagster-daemon", "daemon"),
        ("daemon run", "daemon"),
        ("api grpc", "code server"),
        ("code-server start", "code server"),
        ("multiprocessing.spawn", "run step"),
        ("execute_run", "run worker"),
        ("execute_step", "run worker"),
        ("dagster dev", "dagster dev"),
    ):
        if needle in cmdline:
            return role
    return "other: " + " ".join(Path(part).name for part in cmdline.split()[:3])


@dataclass(frozen=True)
class Verdict:
    passed: bool
    misses: list[str]


def verdict(
    events: EventFigures,
    bursts: Sequence[BurstOutcome],
    digests: DigestFigures,
    quarantined: int,
    poison_sent: int,
    wedged: int,
    growth: Mapping[tuple[int, str], tuple[float, float]],
) -> Verdict:
    """The soak's targets: nothing lost or duplicated unflagged, quarantine == poison sent,
    nothing wedged, RSS growth < 50 MB for every product process."""
    misses = []
    if events.lost:
        misses.append(f"{events.lost} event(s) lost")
    if events.duplicated or events.unmatched:
        misses.append(f"{events.duplicated + events.unmatched} event duplicate(s)")
    live = [b for b in bursts if b.live]
    lost_alerts = sum(not b.headsups for b in live) + sum(not b.verdicts for b in live)
    if lost_alerts:
        misses.append(f"{lost_alerts} heads-up(s)/verdict(s) lost")
    dup_alerts = sum(
        unflagged_extra(b.headsups, b.headsups_flagged)
        + unflagged_extra(b.verdicts, b.verdicts_flagged)
        for b in bursts
    )
    if dup_alerts:
        misses.append(f"{dup_alerts} unflagged duplicate heads-up(s)/verdict(s)")
    if digests.missing:
        misses.append(f"digests missing for {', '.join(digests.missing)}")
    if digests.repeated:
        misses.append(f"{digests.repeated} unflagged repeated digest(s)")
    if quarantined != poison_sent:
        misses.append(f"{quarantined} quarantined vs {poison_sent} poison item(s) sent")
    if wedged:
        misses.append(f"{wedged} wedged run(s)")
    for (pid, role), (first, last) in growth.items():
        if role != "simulator" and last - first >= RSS_TARGET_MB:
            misses.append(f"{role} (pid {pid}) RSS grew {last - first:.0f} MB")
    return Verdict(not misses, misses)


# --------------------------------------------------------------------------- the system


def http(url: str, body: object | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def system_processes(data_dir: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process started with CG_DATA_DIR=data_dir (the launcher
    gives it to each child, and every descendant inherits it)."""
    wanted = f"CG_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), cmdline.strip()))
    return found


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def dir_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                total += (Path(root) / name).stat().st_size
    return total / 2**20


def live_orders(spool_dir: Path, min_usd: float) -> set[tuple[str, int]]:
    """(coin, time ms) of every order of at least `min_usd` that reached the spool from the
    WebSocket, found as the heads-up sensor finds them: in the segments' summaries."""
    found = set()
    for segment in list_segments(spool_dir):
        for minute in segment_summary(segment.path).coin_minutes:
            if minute.largest["usd_value"] >= min_usd:
                found.add((minute.coin, minute.largest["time"]))
    return found


def pending_segments(data_dir: Path) -> int:
    """Published spool segments not yet recorded as ingested: the backlog."""
    ranges = IngestedRanges(Lake(data_dir), ORDERS).ranges()
    return sum(not covers(ranges, s.seq) for s in list_segments(data_dir / "spool"))


def count_lines(paths: Iterable[Path]) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in paths if p.exists())


@dataclass
class Soak:
    """One soak's state: the system's endpoints and what it sent, killed and measured."""

    data_dir: Path
    ports: Ports
    launcher: Launcher
    settings: Settings
    instance: dg.DagsterInstance
    t0: float = 0.0  # wall clock, start of the load phase
    bursts: list[tuple[str, int]] = field(default_factory=list)
    killed_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss: list[RssSample] = field(default_factory=list)
    sent_ids: set[str] = field(default_factory=set)
    fetched_to_ms: int = 0

    def log(self, text: str) -> None:
        print(f"[{time.time() - self.t0:7.1f} s] {text}", flush=True)

    # ------------------------------------------------------------------ actions

    def do(self, step: Step) -> None:
        sim, standin = self.ports.sim_url, self.ports.standin
        if step.action == "ws_close":
            closed = http(f"{sim}/_sim/ws/close", {})["closed"]
            self.log(f"WebSocket closed from the server side ({closed} connection(s))")
        elif step.action == "ping_silence":
            http(f"{sim}/_sim/ws/faults", {"answer_pings": not step.arg})
            self.log("ping silence " + ("starts" if step.arg else "ends"))
        elif step.action == "rest_5xx":
            http(f"{sim}/_sim/faults", {"error_5xx_rate": step.arg})
            self.log(f"REST 5xx rate {step.arg:g}")
        elif step.action == "telegram_429":
            http(f"{standin}/_sim/faults", {"flood": step.arg, "retry_after": 3})
            self.log(f"Telegram 429 storm: the next {step.arg} sendMessage calls")
        elif step.action == "telegram_outage":
            http(f"{standin}/_sim/outage", {"seconds": step.arg})
            self.log(f"Telegram outage for {step.arg:g} s (502 Bad Gateway)")
        elif step.action == "poison":
            frames = http(f"{sim}/_sim/ws/poison", {"kind": step.arg})["frames"]
            self.log(f"poison item ({step.arg}) pushed in {frames} frame(s)")
        elif step.action == "burst":
            order = http(f"{sim}/_sim/liquidation", {"coin": step.arg, "usd": BURST_USD})
            self.bursts.append((order["coin"], order["time"]))
            self.log(f"burst planted: {order['coin']} ${BURST_USD:,} on {order['exchange']}")
        elif step.action == "kill_worker":
            self.kill_worker()
        elif step.action == "kill_sidecar":
            self.kill_sidecar()
        else:
            raise ValueError(f"unknown soak action {step.action!r}")

    def try_step(self, step: Step) -> None:
        """Do `step`; a failure becomes a note in the report, not the end of the soak."""
        try:
            self.do(step)
        except (OSError, ValueError, SystemExit) as exc:  # urllib's errors are OSErrors
            self.notes.append(f"{step.action} at {step.at_s:.0f} s failed: {exc}")
            self.log(self.notes[-1])

    def kill_worker(self) -> None:
        """SIGKILL the worker of an ingestion run caught in its gap fill: a close makes the
        next batch hold a gap, slow REST answers (2 s) keep its run busy filling it."""
        http(f"{self.ports.sim_url}/_sim/faults", {"latency_s": 2.0})
        http(f"{self.ports.sim_url}/_sim/ws/close", {})
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                found = self.running_ingest_worker()
                if found:
                    run_id, pid = found
                    os.kill(pid, signal.SIGKILL)
                    self.killed_runs.append(run_id)
                    self.log(f"run worker killed -9: pid {pid}, ingestion run {run_id}")
                    return
                time.sleep(0.5)
            self.notes.append("no ingestion run was caught running within 180 s; none killed")
            self.log(self.notes[-1])
        finally:
            http(f"{self.ports.sim_url}/_sim/faults", {"latency_s": 0.0})

    def running_ingest_worker(self) -> tuple[str, int] | None:
        records = self.instance.get_run_records(
            dg.RunsFilter(job_name=INGEST_JOB, statuses=[dg.DagsterRunStatus.STARTED])
        )
        for record in records:
            run_id = record.dagster_run.run_id
            for entry in self.instance.all_logs(run_id):
                message = entry.message or ""
                if PID_LINE in message:
                    return run_id, int(message.split(PID_LINE)[1].split(")")[0])
        return None

    def kill_sidecar(self) -> None:
        [pid] = [p for p, cmd in system_processes(self.data_dir) if "ws_sidecar" in cmd]
        os.kill(pid, signal.SIGKILL)
        self.log(f"sidecar killed -9 (pid {pid}); restarting it in 5 s, as a service manager would")
        time.sleep(5)  # the outage a service manager's restart delay makes
        start_sidecar(self.launcher, self.ports)
        self.log("sidecar restarted")
        self.notes.append(
            "the sidecar was restarted by the soak 5 s after its kill -9: `make demo` restarts"
            " nothing (it stops every process when one dies)"
        )

    # ------------------------------------------------------------------ measuring

    def sample_rss(self) -> None:
        now = time.time() - self.t0
        for pid, cmd in system_processes(self.data_dir):
            mb = rss_mb(pid)
            if mb is not None:
                self.rss.append(RssSample(now, pid, process_role(cmd), mb))

    def fetch_sent(self, until_ms: int) -> None:
        """Event ids the feed generated in scope from the last fetch to `until_ms`, a minute
        at a time (the feed keeps only its newest two million events); a window is taken as
        far as the simulator says it is complete, and the rest asked again."""
        while self.fetched_to_ms < until_ms:
            end = min(self.fetched_to_ms + 60_000, until_ms)
            params = urllib.parse.urlencode(
                {
                    "start_ms": self.fetched_to_ms,
                    "end_ms": end,
                    "coins": ",".join(self.settings.symbols),
                    "exchanges": ",".join(self.settings.exchanges),
                }
            )
            columns = http(f"{self.ports.sim_url}/_sim/feed/events?{params}", timeout=120)
            self.sent_ids.update(
                event_id(*row)
                for row in zip(
                    columns["exchange"],
                    columns["pair"],
                    columns["time"],
                    columns["price"],
                    columns["side"],
                    columns["usd_value"],
                    strict=True,
                )
            )
            self.fetched_to_ms = columns["end_ms"]

    def stored(self, start_ms: int, end_ms: int) -> tuple[list[str], int, int]:
        """The event ids stored for the window and scope, the table's duplicate rows (beyond
        the first of an id) and its row count."""
        lake = Lake(self.data_dir)
        con = duckdb.connect()
        try:
            lake.attach(con, ORDERS, lake.days(ORDERS), SCHEMA, name="orders")
            ids = [
                r[0]
                for r in con.execute(
                    "SELECT event_id FROM orders WHERE epoch_ms(ts) >= $start AND epoch_ms(ts)"
                    " < $end AND list_contains($coins, symbol) AND list_contains($exchanges,"
                    " exchange)",
                    {
                        "start": start_ms,
                        "end": end_ms,
                        "coins": list(self.settings.symbols),
                        "exchanges": list(self.settings.exchanges),
                    },
                ).fetchall()
            ]
            rows, distinct = con.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM orders"
            ).fetchone()
        finally:
            con.close()
        return ids, rows - distinct, rows

    def messages(self) -> list[dict]:
        return http(f"{self.ports.standin}/_sim/messages")

    def unfinished_runs(self) -> list[dg.RunRecord]:
        return list(self.instance.get_run_records(dg.RunsFilter(statuses=UNFINISHED)))

    def run_status(self, run_id: str) -> str:
        run = self.instance.get_run_by_id(run_id)
        return "gone" if run is None else run.status.value

    def refreshed_bars(self, since: float) -> list[str]:
        """The newest closed bar of each market refresh that succeeded since `since` (s)."""
        records = self.instance.get_run_records(
            dg.RunsFilter(job_name=MARKET_JOB, statuses=[dg.DagsterRunStatus.SUCCESS])
        )
        bars = set()
        for record in records:
            started = record.start_time
            if started is not None and started >= since:
                ms = int(started * 1000)
                bars.add(bar_label(ms - ms % HOUR_MS - HOUR_MS))
        return sorted(bars)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the load phase")
    parser.add_argument("--rate", type=float, default=2000.0, help="liquidation events per second")
    parser.add_argument("--drain-minutes", type=float, default=6.0, help="drain at most this long")
    parser.add_argument("--bursts-per-20-min", type=int, default=30)
    parser.add_argument(
        "--burst-coins", default=None, help="coins the bursts rotate over (default: CG_SYMBOLS)"
    )
    parser.add_argument("--ws-close-every-s", type=float, default=120.0)
    parser.add_argument("--backfill-days", type=int, default=1)
    parser.add_argument("--ingest-interval-s", type=int, default=None, help="INGEST_INTERVAL_S")
    parser.add_argument("--wedged-after-s", type=float, default=300.0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def soak_env(data_dir: Path, ports: Ports, ingest_interval_s: int | None) -> dict[str, str]:
    env = simulator_env(data_dir, ports)
    env.update({f"ALERT_{name}_MINUTES": "0" for name in COOLDOWNS})
    env["HEADSUP_SINGLE_USD"] = str(HEADSUP_SINGLE_USD)
    env["HEADSUP_MINUTE_USD"] = str(HEADSUP_MINUTE_USD)
    if ingest_interval_s is not None:
        env["INGEST_INTERVAL_S"] = str(ingest_interval_s)
    return env


def run(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="cg-soak-"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = Ports().resolved()
    env = soak_env(data_dir, ports, args.ingest_interval_s)
    settings = Settings.from_env(env)
    duration_s = args.minutes * 60
    schedule = sorted(
        fault_schedule(duration_s, args.ws_close_every_s)
        + burst_schedule(
            duration_s,
            args.burst_coins.split(",") if args.burst_coins else settings.symbols,
            args.bursts_per_20_min,
        )
        + poison_schedule(duration_s)
    )
    print(f"soak in {data_dir}: {args.minutes:g} min at {args.rate:g} events/s, then a drain")
    print(f"load average {os.getloadavg()[1]:.1f} (5 min) on {os.cpu_count()} CPUs", flush=True)
    with Launcher(env, data_dir) as launcher:
        ui = start_system(launcher, ports, ("--liq-rate", str(args.rate), "--scenario", "cascade"))
        now = datetime.now(UTC)
        newest = newest_day(now, settings.interval_ms)
        backfill = launch_backfill(ui, args.backfill_days, newest, now.date())
        handover = Handover(ui, backfill, newest, launcher.start_schedules)
        # Off the schedule's thread: starting the schedules is a `dagster` CLI call that takes
        # a minute on a loaded machine, which would delay the faults and bursts behind it.
        threading.Thread(target=hand_over, args=(handover,), daemon=True).start()
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        soak = Soak(data_dir, ports, launcher, settings, instance)
        try:
            figures = load_and_drain(soak, schedule, duration_s, args)
        finally:
            instance.dispose()
    result = figures.verdict()
    print(figures.report(), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures.as_dict(), indent=1))
    print("PASS" if result.passed else "FAIL: " + "; ".join(result.misses), flush=True)
    return 0 if result.passed else 1


@dataclass(frozen=True)
class Figures:
    """Everything a soak measured, and its report."""

    args: argparse.Namespace
    duration_s: float
    drained_s: float
    events: EventFigures
    bursts: list[BurstOutcome]
    unplanted_headsups: int
    backlog: int  # spool segments not ingested at the end
    digests: DigestFigures
    quarantined: int
    poison_sent: int
    runs: Counter[str]
    killed: list[str]
    unfinished: list[str]
    wedged: list[str]
    growth: dict[tuple[int, str], tuple[float, float]]
    per_run: tuple[int, float]  # per-run processes seen, their peak RSS (MB)
    storage_mb: tuple[float, float]
    notes: list[str]

    def verdict(self) -> Verdict:
        return verdict(
            self.events,
            self.bursts,
            self.digests,
            self.quarantined,
            self.poison_sent,
            len(self.wedged),
            self.growth,
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON values, for the CI soak's assertions."""
        return {
            "events": asdict(self.events),
            "backlog": self.backlog,
            "bursts": [asdict(b) for b in self.bursts],
            "digests": asdict(self.digests),
            "quarantined": self.quarantined,
            "poison_sent": self.poison_sent,
            "runs": dict(self.runs),
            "killed": self.killed,
            "wedged": self.wedged,
            "rss_mb": [[pid, role, a, b] for (pid, role), (a, b) in self.growth.items()],
            "per_run_rss": list(self.per_run),
            "storage_mb": list(self.storage_mb),
            "notes": self.notes,
            "verdict": asdict(self.verdict()),
        }

    def report(self) -> str:
        e, b = self.events, self.bursts
        live = [x for x in b if x.live]
        gap = [x for x in b if not x.live]
        gap_heads = sum(x.headsups > 0 for x in gap)
        heads = sum(x.headsups for x in b)
        verdicts = sum(x.verdicts for x in b)
        dup_heads = sum(unflagged_extra(x.headsups, x.headsups_flagged) for x in b)
        dup_verdicts = sum(unflagged_extra(x.verdicts, x.verdicts_flagged) for x in b)
        flagged = sum(x.headsups_flagged + x.verdicts_flagged for x in b)
        hours = self.drained_s / 3600
        first, last = self.storage_mb
        lines = [
            "",
            f"== soak: {self.args.minutes:g} min at {self.args.rate:g} events/s,"
            f" drained {self.drained_s - self.duration_s:.0f} s ==",
            f"events sent (in scope)   {e.sent:,}",
            f"stored                   {e.stored:,}  (table rows in all: {e.rows:,})",
            f"lost                     {e.lost:,}  (spool segments not ingested at the end:"
            f" {self.backlog})",
            f"duplicated               {e.duplicated:,} (one id stored twice)"
            f" + {e.unmatched:,} (stored copies matching no sent event)",
            f"bursts planted           {len(b)}; {len(gap)} never reached the spool live"
            f" (planted during a disconnect; late heads-ups from gap fill: {gap_heads})",
            f"heads-ups delivered      {heads} for {sum(x.headsups > 0 for x in b)} bursts;"
            f" lost {sum(not x.headsups for x in live)}, unflagged duplicates {dup_heads}",
            f"verdicts delivered       {verdicts} for {sum(x.verdicts > 0 for x in b)} bursts;"
            f" lost {sum(not x.verdicts for x in live)}, unflagged duplicates {dup_verdicts}",
            f"flagged repeats          {flagged}; heads-ups for no planted burst:"
            f" {self.unplanted_headsups}",
            f"digests per bar          {self.digests.per_bar or 'none'}",
            f"digests missing          {self.digests.missing or 'none'};"
            f" repeated (unflagged) {self.digests.repeated}",
            f"quarantined              {self.quarantined} (poison items sent: {self.poison_sent})",
            f"runs                     {dict(self.runs)}",
            f"run workers killed       {', '.join(self.killed) or 'none'}",
            f"unfinished runs at end   {len(self.unfinished)}; wedged (over"
            f" {self.args.wedged_after_s:g} s): {len(self.wedged)} {self.wedged or ''}",
            "RSS, end of first minute -> end (MB):",
        ]
        for (pid, role), (start, end) in sorted(self.growth.items(), key=lambda i: i[0][1]):
            judged = "" if role != "simulator" else "  (test double, not judged)"
            growth = f"{start:7.1f} -> {end:7.1f}  ({end - start:+.1f})"
            lines.append(f"  {role:<12} pid {pid:<7} {growth}{judged}")
        lines.append(
            f"  run workers  {self.per_run[0]} processes of single runs, peak"
            f" {self.per_run[1]:.0f} MB (not growth: each exits with its run)"
        )
        lines.append(
            f"Dagster storage          {first:.1f} -> {last:.1f} MB in {hours * 60:.0f} min"
            f" ({(last - first) / hours:.1f} MB/h)"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def hand_over(handover: Handover) -> None:
    """`make demo`'s hand-over: once the backfill is done, refresh the newest day and start
    the schedules."""
    while not handover.done:
        handover()
        time.sleep(1)


def load_and_drain(
    soak: Soak,
    schedule: list[Step],
    duration_s: float,
    args: argparse.Namespace,
) -> Figures:
    """Run the schedule, switch every fault off, drain, and measure."""
    home = soak.data_dir / "dagster_home"
    soak.t0 = time.time()
    start_ms = soak.fetched_to_ms = int(soak.t0 * 1000)
    end_ms = start_ms + int(duration_s * 1000)
    storage_start = dir_mb(home)
    pending = list(schedule)
    next_rss = 0.0
    while (elapsed := time.time() - soak.t0) < duration_s:
        while pending and pending[0].at_s <= elapsed:
            step = pending.pop(0)
            if step.action in SLOW_ACTIONS:  # minutes of waiting must not hold the rest back
                threading.Thread(target=soak.try_step, args=(step,), daemon=True).start()
            else:
                soak.try_step(step)
        if elapsed >= next_rss:
            soak.sample_rss()
            next_rss = elapsed + 10
        soak.fetch_sent(min(int(time.time() * 1000) - 30_000, end_ms))
        time.sleep(0.5)
    soak.log("load phase over; faults off, draining")
    http(f"{soak.ports.sim_url}/_sim/faults", {"error_5xx_rate": 0.0, "latency_s": 0.0})
    http(f"{soak.ports.sim_url}/_sim/ws/faults", {"answer_pings": True})
    http(f"{soak.ports.standin}/_sim/faults", {"flood": 0})
    soak.fetch_sent(end_ms)
    drain_deadline = time.monotonic() + args.drain_minutes * 60
    while True:
        soak.sample_rss()
        ids, duplicated, rows = soak.stored(start_ms, end_ms)
        events = event_figures(soak.sent_ids, ids, duplicated, rows)
        live = live_orders(soak.data_dir / "spool", HEADSUP_SINGLE_USD)
        outcomes = burst_outcomes(soak.bursts, soak.messages(), live)
        owed = sum(b.live and (not b.headsups or not b.verdicts) for b in outcomes)
        backlog = pending_segments(soak.data_dir)
        if (not events.lost and not owed) or time.monotonic() > drain_deadline:
            break
        soak.log(
            f"draining: {events.lost:,} event(s) not stored yet, {owed} burst(s) owed,"
            f" {backlog} spool segment(s) not ingested yet"
        )
        time.sleep(10)
    drained_s = time.time() - soak.t0
    messages = soak.messages()
    # Kept beside the logs, so the alert figures can be checked message by message.
    (soak.data_dir / "telegram_messages.json").write_text(json.dumps(messages, indent=1))
    # A bar refreshed in the last 5 minutes may still have its digest on the way.
    expected = set(soak.refreshed_bars(soak.t0)) - set(soak.refreshed_bars(time.time() - 300))
    quarantine = soak.data_dir / QUARANTINE_FILE
    now = time.time()
    unfinished = soak.unfinished_runs()
    return Figures(
        args=args,
        duration_s=duration_s,
        drained_s=drained_s,
        events=events,
        bursts=outcomes,
        backlog=backlog,
        unplanted_headsups=sum("liquidation burst:" in m["plain"] for m in messages)
        - sum(b.headsups for b in outcomes),
        digests=digest_figures(messages, expected),
        quarantined=count_lines([quarantine, quarantine.with_name(QUARANTINE_FILE + ".1")]),
        poison_sent=http(f"{soak.ports.sim_url}/_sim/ws/stats")["poisoned_events"],
        runs=Counter(
            f"{r.dagster_run.job_name}:{r.dagster_run.status.value}"
            for r in soak.instance.get_run_records()
        ),
        killed=[f"{run_id} ({soak.run_status(run_id)})" for run_id in soak.killed_runs],
        unfinished=[r.dagster_run.run_id for r in unfinished],
        wedged=[
            r.dagster_run.run_id
            for r in unfinished
            if now - (r.start_time or r.create_timestamp.timestamp()) > args.wedged_after_s
        ],
        growth=rss_growth(soak.rss, settle_s=MINUTE_S),
        per_run=per_run_peak_mb(soak.rss),
        storage_mb=(storage_start, dir_mb(home)),
        notes=soak.notes,
    )


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
