"""Settings read from the environment and validated when the code location loads.

The partition start date, symbols, exchanges and interval shape the asset graph itself, so a bad
value must stop the load with a message a user can act on, not surface as a failed run hours
later. Every problem found is reported at once, each naming the variable, the value and what
is allowed. Secrets (the API key, the bot token) are deliberately not held here: resources read
them through `EnvVar` so they never reach the UI or run config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import TypeVar

from cg_assets.coinglass.plans import (
    INTERVAL_MS,
    PLAN_LIMITS,
    WEBSOCKET_PLAN,
    Plan,
    interval_ms,
    lowest_plan_for_interval,
    parse_plan,
)
from cg_assets.state_location import STATE_DSN_SETTING, is_postgres_dsn
from ws_sidecar.store import (
    S3_ENDPOINT_ENV,
    check_endpoint,
    check_store_url,
    hide_credentials,
)

DEFAULT_API_BASE_URL = "https://open-api-v4.coinglass.com"
DEFAULT_WS_URL = "wss://open-ws.coinglass.com/ws-api"
DEFAULT_TELEGRAM_API_BASE_URL = "https://api.telegram.org"
DEFAULT_START_DATE = date(2026, 1, 1)

# Set by `make run` and `make demo` to say whether they started the sidecar; `auto` (running
# the code location some other way) expects one whenever the plan has the WebSocket.
SIDECAR_MODES = ("auto", "on", "off")
INGEST_DEFAULTS = {
    "INGEST_INTERVAL_S": "60",
    "INGEST_MAX_EVENTS": "200000",
    "INGEST_RETRY_BACKOFF_S": "60",
    "INGEST_ALERT_AFTER_FAILURES": "3",
    "INGEST_MAX_RUNTIME_S": "900",
}

_COIN_RE = re.compile(r"^[A-Z0-9]{1,20}$")
T = TypeVar("T")
_OVERRIDE_RE = re.compile(r"^(?P<exchange>[^:=]+):(?P<coin>[A-Z0-9]+)=(?P<pair>\S+)$")


class SettingsError(ValueError):
    """One or more environment variables are invalid; the message lists each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    api_base_url: str = DEFAULT_API_BASE_URL
    ws_url: str = DEFAULT_WS_URL
    plan: Plan = Plan.STANDARD
    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL")
    exchanges: tuple[str, ...] = ("Binance", "OKX", "Bybit")
    interval: str = "1h"
    start_date: date = DEFAULT_START_DATE
    data_dir: Path = Path("data")
    # Where the lake and the published spool live (`ws_sidecar.store`): a local path or
    # s3://bucket/prefix; None: `data_dir`, as on one machine.
    lake_url: str | None = None
    rate_limit_per_min: int | None = None
    # (exchange, coin) -> instrument id, for exchanges whose perpetual cannot be picked safely.
    pair_overrides: Mapping[tuple[str, str], str] = field(default_factory=dict)
    telegram_api_base_url: str = DEFAULT_TELEGRAM_API_BASE_URL
    # Ingested spool segments older than this are deleted (the REST history reaches 7 days).
    spool_retention_days: float = 7.0
    # Whether a ws_sidecar runs for this code location, so its health is watched.
    sidecar_expected: bool = True
    # At most one liquidation ingestion run per this many seconds (the heads-up path reads
    # the spool itself, so its latency does not depend on it).
    ingest_interval_s: int = 60
    # Spool records one ingestion run takes at most, so its memory stays bounded.
    ingest_max_events: int = 200_000
    # The wait before re-requesting a failed ingestion, doubling per consecutive failure.
    ingest_retry_backoff_s: int = 60
    # Consecutive failed ingestion runs that page the ops chat.
    ingest_alert_after_failures: int = 3
    # An ingestion run still going after this long is stuck: run monitoring fails it.
    ingest_max_runtime_s: int = 900
    # When (UTC) the daily heartbeat goes to the alert chat; None: no heartbeat.
    heartbeat_at: time | None = None

    @property
    def interval_ms(self) -> int:
        return INTERVAL_MS[self.interval]

    @property
    def uses_default_api(self) -> bool:
        return self.api_base_url.rstrip("/") == DEFAULT_API_BASE_URL

    @property
    def effective_rate_limit_per_min(self) -> int:
        return self.rate_limit_per_min or PLAN_LIMITS[self.plan].requests_per_minute

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: os.environ), raising SettingsError."""
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def get(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        plan = _parse(problems, "CG_PLAN", get("CG_PLAN", Plan.STANDARD.value), parse_plan)
        interval = get("CG_INTERVAL", "1h")
        if _parse(problems, "CG_INTERVAL", interval, interval_ms) is not None and plan:
            _check_interval_floor(problems, interval, plan)
        start = _parse(
            problems, "CG_START_DATE", get("CG_START_DATE", DEFAULT_START_DATE.isoformat()), _date
        )
        symbols = _parse(problems, "CG_SYMBOLS", get("CG_SYMBOLS", "BTC,ETH,SOL"), _coins)
        exchanges = _parse(
            problems, "CG_EXCHANGES", get("CG_EXCHANGES", "Binance,OKX,Bybit"), _names
        )
        rate = _parse(problems, "CG_RATE_LIMIT_PER_MIN", get("CG_RATE_LIMIT_PER_MIN", ""), _rate)
        overrides = _parse(problems, "CG_PAIR_OVERRIDES", get("CG_PAIR_OVERRIDES", ""), _overrides)
        api_base = _parse(
            problems, "CG_API_BASE_URL", get("CG_API_BASE_URL", DEFAULT_API_BASE_URL), _http_url
        )
        tg_base = _parse(
            problems,
            "TELEGRAM_API_BASE_URL",
            get("TELEGRAM_API_BASE_URL", DEFAULT_TELEGRAM_API_BASE_URL),
            _http_url,
        )
        retention = _parse(
            problems, "SPOOL_RETENTION_DAYS", get("SPOOL_RETENTION_DAYS", "7"), _retention_days
        )
        lake_url = _parse(
            problems, "CG_LAKE_URL", get("CG_LAKE_URL", ""), _lake_url, hide_credentials
        )
        endpoint = get(S3_ENDPOINT_ENV, "")
        if endpoint:
            _parse(problems, S3_ENDPOINT_ENV, endpoint, check_endpoint, hide_credentials)
        sidecar = _parse(problems, "CG_SIDECAR", get("CG_SIDECAR", "auto"), _sidecar_mode)
        if sidecar == "on" and plan and not plan.has_websocket:
            problems.append(
                f"CG_SIDECAR='on': the liquidation WebSocket needs the {WEBSOCKET_PLAN.label}"
                f" plan or higher (CG_PLAN={plan.value}); leave CG_SIDECAR unset or set it to off"
            )
        heartbeat = _parse(problems, "CG_HEARTBEAT_AT", get("CG_HEARTBEAT_AT", "off"), _time_of_day)
        _check_state_dsn(problems, env.get(STATE_DSN_SETTING, "").strip())
        ingest = {
            name: _parse(problems, name, get(name, default), _positive_int)
            for name, default in INGEST_DEFAULTS.items()
        }
        if problems:
            raise SettingsError(problems)
        return cls(
            api_base_url=api_base,
            ws_url=get("CG_WS_URL", DEFAULT_WS_URL),
            plan=plan,
            symbols=symbols,
            exchanges=exchanges,
            interval=interval,
            start_date=start,
            data_dir=Path(get("CG_DATA_DIR", "data")).expanduser().resolve(),
            lake_url=lake_url,
            rate_limit_per_min=rate,
            pair_overrides=overrides,
            telegram_api_base_url=tg_base,
            spool_retention_days=retention,
            sidecar_expected=plan.has_websocket and sidecar != "off",
            ingest_interval_s=ingest["INGEST_INTERVAL_S"],
            ingest_max_events=ingest["INGEST_MAX_EVENTS"],
            ingest_retry_backoff_s=ingest["INGEST_RETRY_BACKOFF_S"],
            ingest_alert_after_failures=ingest["INGEST_ALERT_AFTER_FAILURES"],
            ingest_max_runtime_s=ingest["INGEST_MAX_RUNTIME_S"],
            heartbeat_at=heartbeat,
        )


def _parse(
    problems: list[str],
    name: str,
    value: str,
    parser: Callable[[str], T],
    show: Callable[[str], str] = str,
) -> T | None:
    """Apply `parser`, turning its ValueError into one problem line naming variable and value
    (as `show` renders it, so credentials pasted into a URL are not echoed)."""
    try:
        return parser(value)
    except ValueError as exc:
        problems.append(f"{name}={show(value)!r}: {exc}")
        return None


def _check_state_dsn(problems: list[str], value: str) -> None:
    if value and not is_postgres_dsn(value):
        scheme = value.split("://", 1)[0] if "://" in value else "none"
        problems.append(
            f"{STATE_DSN_SETTING}: expected a postgresql:// URL, got one with scheme {scheme!r}"
            " (the value is not shown: it may carry a password)"
        )


def _check_interval_floor(problems: list[str], interval: str, plan: Plan) -> None:
    if interval_ms(interval) < PLAN_LIMITS[plan].min_interval_ms:
        floor = min(
            (k for k, v in INTERVAL_MS.items() if v >= PLAN_LIMITS[plan].min_interval_ms),
            key=INTERVAL_MS.__getitem__,
        )
        problems.append(
            f"CG_INTERVAL={interval!r}: below the {plan.label} plan's floor (CG_PLAN={plan.value}"
            f" allows intervals >= {floor}); use CG_INTERVAL={floor} or a plan of at least"
            f" {lowest_plan_for_interval(interval).label}"
        )


def _date(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError("expected a date as YYYY-MM-DD, e.g. 2026-01-01") from None


def _names(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names:
        raise ValueError("the list is empty; give at least one name, comma-separated")
    return names


def _coins(value: str) -> tuple[str, ...]:
    coins = _names(value)
    bad = [c for c in coins if not _COIN_RE.match(c)]
    if bad:
        raise ValueError(
            f"{', '.join(map(repr, bad))} not a coin ticker; use upper-case tickers such as BTC,ETH"
        )
    return coins


def _retention_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not 0 < days < float("inf"):
        raise ValueError("expected a positive number of days")
    return days


def _lake_url(value: str) -> str | None:
    """None (the data dir), an absolute local path, or an s3:// URL."""
    if not value:
        return None
    url = check_store_url(value)
    return url if "://" in url else str(Path(url).expanduser().resolve())


def _sidecar_mode(value: str) -> str:
    mode = value.lower()
    if mode not in SIDECAR_MODES:
        raise ValueError(
            "expected auto (a sidecar runs when the plan has the WebSocket), on or off"
        )
    return mode


def _time_of_day(value: str) -> time | None:
    if value.lower() == "off":
        return None
    try:
        return datetime.strptime(value, "%H:%M").time()
    except ValueError:
        raise ValueError("expected a UTC time of day as HH:MM, e.g. 08:00, or off") from None


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ValueError("expected a positive whole number")
    return int(value)


def _rate(value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise ValueError("expected a positive whole number of requests per minute")
    return int(value)


def _overrides(value: str) -> dict[tuple[str, str], str]:
    result: dict[tuple[str, str], str] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        match = _OVERRIDE_RE.match(part)
        if not match:
            raise ValueError(
                f"entry {part!r} is not EXCHANGE:COIN=INSTRUMENT (OKX:BTC=BTC-USDT-SWAP)"
            )
        result[(match["exchange"], match["coin"])] = match["pair"]
    return result


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("expected an http(s) URL such as https://open-api-v4.coinglass.com")
    return value.rstrip("/")
