"""Wires config, spool, connection and health together and runs until SIGTERM or SIGINT.

Start-up resumes where the previous run stopped: segment numbering continues, and the
previous run's newest published record opens a gap that the first subscription closes.
With a shared store (`CG_LAKE_URL` elsewhere than `CG_DATA_DIR`) a publisher task copies
each closed segment there (`ws_sidecar.publish`); numbering then also continues after the
store's highest seq, so a sidecar started on a new node with an empty disk never reuses one.
Shutdown stops reading, flushes every queued event into published segments and exits 0,
all within 5 s; anything that could not be flushed in time is reported and lies inside the
gap the next start records, so nothing is lost silently either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from ws_sidecar.config import MASK, Config, ConfigError
from ws_sidecar.connection import Connection
from ws_sidecar.health import HealthServer, Monitor, keep_status_file, write_status
from ws_sidecar.publish import Publisher, highest_seq
from ws_sidecar.quarantine import Quarantine
from ws_sidecar.recorder import Recorder
from ws_sidecar.sink import SpoolSink
from ws_sidecar.spool import SpoolBusyError, SpoolPath, SpoolWriter, last_record_time
from ws_sidecar.stats import Stats
from ws_sidecar.store import open_store

log = logging.getLogger("ws_sidecar")

# Leaves a margin under the 5 s a supervisor may wait before it sends SIGKILL.
CONNECTION_CLOSE_BUDGET_S = 1.5
FLUSH_BUDGET_S = 3.0


def main() -> int:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"ws_sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    try:
        return asyncio.run(run(config))
    except SpoolBusyError as exc:
        log.error("%s", exc)
        return 3
    except Exception:
        log.exception("ws_sidecar crashed")
        return 1


def configure_logging(config: Config) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redactor(config.secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)


class Redactor(logging.Filter):
    """Replaces the API key with *** in every record, whichever library logged it and
    whatever it interpolated (URLs in exception messages, tracebacks)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg, record.args = self.redact(record.getMessage()), ()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
        return True


def previous_status(config: Config) -> dict[str, Any]:
    """The status file the previous run left, or {} (absent or unreadable: start fresh)."""
    try:
        status = json.loads(config.status_path.read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def publish_target(config: Config) -> SpoolPath | None:
    """The shared store's spool, or None when the readers read the local spool itself."""
    if config.lake_url is None:
        return None
    store = open_store(config.lake_url)
    if store.same_place(open_store(config.data_dir)):
        return None
    return store.path("spool")


def _published_seq(target: SpoolPath | None) -> int:
    """The store's highest seq (-1: none, no store, or the store cannot be listed now)."""
    if target is None:
        return -1
    try:
        return highest_seq(target)
    except OSError as exc:
        log.warning("cannot list %s at start-up (%s); numbering from the local spool", target, exc)
        return -1


async def run(config: Config) -> int:
    previous = previous_status(config)
    last_seq = _integer(previous.get("last_seq"))
    target = publish_target(config)
    min_seq = max(-1 if last_seq is None else last_seq + 1, _published_seq(target) + 1)
    writer = SpoolWriter(config.spool_dir, min_seq=min_seq)
    try:
        return await _serve(config, writer, previous, target)
    finally:
        writer.close()


async def _serve(
    config: Config, writer: SpoolWriter, previous: dict[str, Any], target: SpoolPath | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = Stats(last_seq=writer.next_seq - 1)
    publisher = None if target is None else Publisher(config.spool_dir, target, stats)
    sink = SpoolSink(
        writer,
        stats,
        config.segment_max_events,
        config.segment_max_age_s,
        config.queue_max_events,
        on_segment=None if publisher is None else publisher.nudge,
    )
    resume_from = last_record_time(config.spool_dir) or _integer(previous.get("last_event_time"))
    quarantine = Quarantine(config.quarantine_path, int(config.quarantine_max_mb * 2**20))
    recorder = Recorder(
        sink,
        stats,
        int(config.gap_margin_s * 1000),
        quarantine,
        resume_from,
        config.event_window,
    )
    monitor = Monitor(stats, sink)
    health = HealthServer(monitor, config.health_host, config.health_port)
    try:
        await health.start()
    except OSError as exc:
        log.error(
            "cannot serve health checks on %s:%d (SIDECAR_HEALTH_PORT): %s",
            config.health_host,
            config.health_port,
            exc.strerror or exc,
        )
        return 2
    log.info(
        "ws_sidecar started (pid %d): spool %s%s, next segment #%d; health %s/health/ready",
        os.getpid(),
        config.spool_dir,
        "" if target is None else f" published to {target}",
        writer.next_seq,
        health.url,
    )
    publish_task = None if publisher is None else asyncio.create_task(publisher.run())
    sink_task = asyncio.create_task(sink.run(), name="spool")
    conn_task = asyncio.create_task(Connection(config, recorder, stats).run(), name="connection")
    status_task = asyncio.create_task(
        keep_status_file(config.status_path, config.status_interval_s, monitor.status)
    )
    stop_task = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait(
        {stop_task, sink_task, conn_task}, return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    for task in done - {stop_task}:  # only a bug ends these two early
        log.error("%s task ended unexpectedly: %r", task.get_name(), task.exception())
        code = 1
    if stop_task in done:
        log.info("stopping: closing the connection, flushing %d queued events", sink.depth)
    stop_task.cancel()
    code = max(code, await _shutdown(conn_task, sink, sink_task))
    if publish_task is not None:
        # Whatever is not published yet stays in the local spool for the next start.
        publish_task.cancel()
    status_task.cancel()
    with contextlib.suppress(OSError):
        write_status(config.status_path, monitor.status())
    await health.close()
    log.info(
        "stopped: %d events received, %d written in %d segments this run",
        stats.events_received,
        stats.events_written,
        stats.segments_written,
    )
    return code


async def _shutdown(conn_task: asyncio.Task, sink: SpoolSink, sink_task: asyncio.Task) -> int:
    conn_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(conn_task, CONNECTION_CLOSE_BUDGET_S)
    sink.close()
    if sink_task.done():  # it failed; there is nothing left that could flush
        return 1
    started = time.monotonic()
    try:
        await asyncio.wait_for(sink_task, FLUSH_BUDGET_S)
    except TimeoutError:
        log.error(
            "could not flush %d queued events within %.0f s; the next start records a gap"
            " from the last published event",
            sink.depth,
            FLUSH_BUDGET_S,
        )
        return 1
    log.info("flushed in %.2f s", time.monotonic() - started)
    return 0
