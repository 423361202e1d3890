"""Sidecar settings, read once from the environment and validated before anything starts.

A sidecar that is meant to run for weeks must refuse a bad value at start-up, naming the
variable and the value, rather than misbehave later. The API key is held here because the
WebSocket URL needs it, but it is never part of a repr, a log line or an error message:
`masked_url` is what logs show.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ws_sidecar.quarantine import QUARANTINE_FILE
from ws_sidecar.store import S3_ENDPOINT_ENV, check_endpoint, check_store_url, hide_credentials
from ws_sidecar.validate import MAX_WINDOW_S, EventWindow

DEFAULT_WS_URL = "wss://open-ws.coinglass.com/ws-api"
CHANNELS = ("liquidationOrders", "liquidation_orders")
KEY_PARAM = "cg-api-key"
MASK = "***"

T = TypeVar("T")


class ConfigError(ValueError):
    """One or more environment variables are invalid; the message lists each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid sidecar settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Config:
    """Everything the sidecar needs; defaults are production values, tests shorten timers."""

    ws_url: str = DEFAULT_WS_URL
    api_key: str | None = field(default=None, repr=False)
    data_dir: Path = Path("data")
    # Where segments are published for the readers (`ws_sidecar.publish`); None: they read
    # the local spool itself.
    lake_url: str | None = None
    channel: str = "liquidationOrders"
    # Loopback by default; a container sets 0.0.0.0 so that the kubelet's probes and
    # Prometheus, which connect to the pod's or container's address, reach it.
    health_host: str = "127.0.0.1"
    health_port: int = 8790
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 10.0
    # Silence (no data and no pong) for this long means the connection is dead.
    watchdog_s: float = 120.0
    segment_max_events: int = 5000
    segment_max_age_s: float = 1.0
    # Events received but not yet handed to the disk writer; beyond it the socket is not read.
    queue_max_events: int = 100_000
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    # A connection that lived this long resets the backoff to its base.
    stable_after_s: float = 60.0
    status_interval_s: float = 2.0
    # Gap windows are widened by this much on both sides: events in flight when a connection
    # dies carry earlier times, and a subscription takes effect a little after it is sent.
    gap_margin_s: float = 5.0
    # An event's own time must lie within this long before or after its receipt; the readers
    # accept up to MAX_WINDOW_S either way, so neither may exceed it.
    event_max_lag_s: float = 3600.0
    event_max_lead_s: float = 300.0
    # The quarantine file is rotated past this size; one rotated file is kept.
    quarantine_max_mb: float = 10.0
    log_level: str = "INFO"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def status_path(self) -> Path:
        return self.data_dir / "sidecar_status.json"

    @property
    def quarantine_path(self) -> Path:
        return self.data_dir / QUARANTINE_FILE

    @property
    def event_window(self) -> EventWindow:
        return EventWindow(round(self.event_max_lag_s * 1000), round(self.event_max_lead_s * 1000))

    @property
    def connect_url(self) -> str:
        """The URL to dial: `ws_url` with the key appended as `cg-api-key` (reference §6)."""
        if not self.api_key:
            return self.ws_url
        parts = urlsplit(self.ws_url)
        query = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != KEY_PARAM
        ]
        query.append((KEY_PARAM, self.api_key))
        return urlunsplit(parts._replace(query=urlencode(query)))

    @property
    def masked_url(self) -> str:
        """`connect_url` as logs may show it."""
        return mask_url(self.connect_url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every spelling of the key that could end up in a message (raw and URL-encoded)."""
        if not self.api_key:
            return ()
        encoded = urlencode({"k": self.api_key})[2:]
        return tuple({self.api_key, encoded})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the config from `environ` (default: os.environ), raising ConfigError."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        ws_url = reader.get("CG_WS_URL", DEFAULT_WS_URL, _ws_url, show=mask_url)
        api_key = env.get("CG_API_KEY", "").strip() or None
        if ws_url and api_key is None and not is_loopback(ws_url):
            reader.problems.append(
                f"CG_API_KEY is not set: it is required for CG_WS_URL={ws_url!r}"
                " (only a loopback simulator URL works without a key)"
            )
        config = cls(
            ws_url=ws_url or DEFAULT_WS_URL,
            api_key=api_key,
            data_dir=Path(env.get("CG_DATA_DIR", "").strip() or "data"),
            lake_url=reader.get("CG_LAKE_URL", "", _lake_url, show=hide_credentials),
            channel=reader.get("CG_WS_CHANNEL", "liquidationOrders", _channel),
            health_host=reader.get("SIDECAR_HEALTH_HOST", "127.0.0.1", _listen_address),
            health_port=reader.get("SIDECAR_HEALTH_PORT", "8790", _port),
            ping_interval_s=reader.get("SIDECAR_PING_INTERVAL_S", "20", _positive),
            pong_timeout_s=reader.get("SIDECAR_PONG_TIMEOUT_S", "10", _positive),
            watchdog_s=reader.get("SIDECAR_WATCHDOG_S", "120", _positive),
            segment_max_events=reader.get("SIDECAR_SEGMENT_MAX_EVENTS", "5000", _count),
            segment_max_age_s=reader.get("SIDECAR_SEGMENT_MAX_AGE_S", "1", _positive),
            queue_max_events=reader.get("SIDECAR_QUEUE_MAX_EVENTS", "100000", _count),
            backoff_base_s=reader.get("SIDECAR_BACKOFF_BASE_S", "1", _positive),
            backoff_cap_s=reader.get("SIDECAR_BACKOFF_CAP_S", "60", _positive),
            stable_after_s=reader.get("SIDECAR_STABLE_AFTER_S", "60", _positive),
            status_interval_s=reader.get("SIDECAR_STATUS_INTERVAL_S", "2", _positive),
            gap_margin_s=reader.get("SIDECAR_GAP_MARGIN_S", "5", _non_negative),
            event_max_lag_s=reader.get("SIDECAR_EVENT_MAX_LAG_S", "3600", _window),
            event_max_lead_s=reader.get("SIDECAR_EVENT_MAX_LEAD_S", "300", _window),
            quarantine_max_mb=reader.get("SIDECAR_QUARANTINE_MAX_MB", "10", _megabytes),
            log_level=reader.get("SIDECAR_LOG_LEVEL", "INFO", _log_level),
        )
        reader.get(S3_ENDPOINT_ENV, "", _endpoint, show=hide_credentials)
        if config.watchdog_s <= config.ping_interval_s:
            reader.problems.append(
                f"SIDECAR_WATCHDOG_S={config.watchdog_s:g} must exceed"
                f" SIDECAR_PING_INTERVAL_S={config.ping_interval_s:g}: a quiet connection only"
                " shows it is alive through pongs"
            )
        if config.backoff_cap_s < config.backoff_base_s:
            reader.problems.append(
                f"SIDECAR_BACKOFF_CAP_S={config.backoff_cap_s:g} is below"
                f" SIDECAR_BACKOFF_BASE_S={config.backoff_base_s:g}"
            )
        if reader.problems:
            raise ConfigError(reader.problems)
        return config


def mask_url(url: str) -> str:
    """`url` with the value of `cg-api-key` replaced by `***`."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, MASK if k == KEY_PARAM else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def is_loopback(url: str) -> bool:
    """True for a URL on this machine (the simulator), where no key is needed."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Parses variables one by one and collects every problem, so all are reported at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def get(
        self, name: str, default: str, parse: Callable[[str], T], show: Callable[[str], str] = str
    ) -> T:
        """The parsed value of `name`; on a problem, note it (the value as `show` renders it,
        so a key pasted into a URL is not echoed) and carry on with the default."""
        raw = self.env.get(name, "").strip() or default
        try:
            return parse(raw)
        except ValueError as exc:
            self.problems.append(f"{name}={show(raw)!r}: {exc}")
            return parse(default)


def _ws_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("expected a ws:// or wss:// URL with a host")
    if any(k == KEY_PARAM for k, _ in parse_qsl(parts.query)):
        raise ValueError(f"put the key in CG_API_KEY, not in the URL's {KEY_PARAM} parameter")
    return raw


def _lake_url(raw: str) -> str | None:
    return check_store_url(raw) if raw else None


def _endpoint(raw: str) -> str | None:
    return check_endpoint(raw) if raw else None


def _channel(raw: str) -> str:
    if raw not in CHANNELS:
        raise ValueError(f"expected one of {', '.join(CHANNELS)}")
    return raw


def _port(raw: str) -> int:
    port = _integer(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a TCP port 0-65535 (0 picks a free one)")
    return port


def _listen_address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ValueError(
            "expected an IP address to listen on (127.0.0.1: this machine only; 0.0.0.0: every"
            " interface, as a container needs)"
        ) from None


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None


def _count(raw: str) -> int:
    value = _integer(raw)
    if value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number of seconds")
    return value


def _positive(raw: str) -> float:
    value = _number(raw)
    if value <= 0:
        raise ValueError("expected a number of seconds > 0")
    return value


def _non_negative(raw: str) -> float:
    value = _number(raw)
    if value < 0:
        raise ValueError("expected a number of seconds >= 0")
    return value


def _window(raw: str) -> float:
    value = _positive(raw)
    if value > MAX_WINDOW_S:
        raise ValueError(
            f"expected at most {MAX_WINDOW_S} s (one day): the spool's readers accept no more"
        )
    return value


def _megabytes(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of megabytes") from None
    if not 0 < value < float("inf"):
        raise ValueError("expected a number of megabytes > 0")
    return value


def _log_level(raw: str) -> str:
    level = raw.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level
