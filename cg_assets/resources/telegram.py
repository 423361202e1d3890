"""Telegram as a Dagster resource: the bot token, where alerts go, and the alert policy.

The token and chat ids arrive through `EnvVar`, so Dagster resolves them when a run starts and
the UI and run config show only the variables' names. Everything else (kill switch, cooldowns,
timeouts) is plain config, editable per run in the launchpad. The resource hands out the
pieces an asset or a sensor combines: `gate()` (may anything be sent?), `ledger()` and
`sender()`; see `cg_assets.telegram.delivery.deliver` for one alert end to end.

Ops alerts (`send_ops`) live here rather than in the alerts domain because domains below it
report incidents too (a silent sidecar, from the liquidations domain), and domains import only
downward.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from cg_assets.resources.state import unshared_state_warning
from cg_assets.settings import DEFAULT_TELEGRAM_API_BASE_URL, Settings
from cg_assets.state_location import STATE_DSN_SETTING
from cg_assets.telegram.delivery import (
    CAP_SETTING,
    CHAT_SETTING,
    TOKEN_SETTING,
    Outcome,
    deliver,
)
from cg_assets.telegram.ledger import AlertLedger, Policy, SignalRef, ledger_path

if TYPE_CHECKING:
    from cg_assets.telegram.sender import TelegramSender

OPS_CHAT_SETTING = "TELEGRAM_OPS_CHAT_ID"
OPS = "ops"
ENABLED_SETTING = "ALERTS_ENABLED"
ALL_CLEAR_SETTING = "ALERT_ALL_CLEAR"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_enabled(value: str, name: str = ENABLED_SETTING) -> bool:
    """A switch such as ALERTS_ENABLED as a bool (empty = enabled); ValueError names the
    variable and value."""
    text = value.strip().lower()
    if text in ("", *_TRUE):
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false (also 1/0, yes/no, on/off)")


def parse_cap(value: str) -> int:
    """ALERT_DAILY_CAP: digests per coin and UTC day (empty or 0 = no cap)."""
    text = value.strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(
            f"{CAP_SETTING}={value!r}: expected a whole number of digests per coin and day"
            " (0 = no cap)"
        )
    return int(text)


class TelegramResource(dg.ConfigurableResource):
    """Telegram alert delivery: credentials, destinations, kill switch and alert policy."""

    bot_token: str | None = None
    chat_id: str | None = None
    ops_chat_id: str | None = None
    base_url: str = DEFAULT_TELEGRAM_API_BASE_URL
    alerts_enabled: bool = True
    dedup_minutes: float = 5.0
    cooldown_high_minutes: float = 30.0
    cooldown_medium_minutes: float = 60.0
    cooldown_low_minutes: float = 360.0
    stale_after_bars: float = 2.0
    # Digests per coin and UTC day; beyond it they are recorded as suppressed (0 = no cap).
    daily_cap: int = 0
    # Reply "all clear" to a HIGH alert once its condition has ended.
    all_clear: bool = True
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    max_attempts: int = 4
    max_wait_s: float = 60.0
    # Where the alert ledger lives: a PostgreSQL DSN shared by every node of a deployment
    # (given as EnvVar("CG_STATE_DSN"), so it is never shown), or None for the SQLite file
    # under the data dir of one machine.
    ledger_location: str | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        warning = unshared_state_warning(context.instance, self.ledger_location, "the alert ledger")
        if warning and context.log:
            context.log.warning(warning)

    def policy(self) -> Policy:
        return Policy(
            dedup_s=self.dedup_minutes * 60,
            cooldown_s={
                "HIGH": self.cooldown_high_minutes * 60,
                "MEDIUM": self.cooldown_medium_minutes * 60,
                "LOW": self.cooldown_low_minutes * 60,
            },
        )

    def ledger(self, data_dir: Path | str, clock: Callable[[], float] = time.time) -> AlertLedger:
        """The configured ledger (else the one under `data_dir`, CG_DATA_DIR) with this
        resource's policy."""
        return AlertLedger(self.ledger_location or ledger_path(data_dir), self.policy(), clock)

    def target(self, ops: bool = False) -> tuple[str, str]:
        """(chat id, the variable it comes from); ops messages fall back to the alert chat."""
        if ops and self.ops_chat_id:
            return self.ops_chat_id, OPS_CHAT_SETTING
        return self.chat_id or "", CHAT_SETTING

    def gate(self, ops: bool = False) -> str:
        """Why nothing may be sent now ('' = go ahead); stored as the suppression reason."""
        if not self.alerts_enabled:
            return f"suppressed: alerts disabled ({ENABLED_SETTING}=false)"
        if not self.bot_token:
            return f"suppressed: no {TOKEN_SETTING}"
        chat, setting = self.target(ops)
        if not chat:
            return f"suppressed: no {setting}"
        return ""

    def open_sender(
        self, gate: str, **overrides: object
    ) -> AbstractContextManager[TelegramSender | None]:
        """`with` an open sender, or None when `gate` suppresses everything (`deliver` then
        only records the alert)."""
        return contextlib.nullcontext() if gate else self.sender(**overrides)

    def sender(self, **overrides: object) -> TelegramSender:
        """An unopened sender (use it as a context manager); only when `gate()` is ''.

        The Telegram client is imported here, not at the top: loading the code location and
        recording suppressed alerts should not pay for python-telegram-bot and httpx."""
        from cg_assets.telegram.sender import TelegramSender

        if not self.bot_token:
            raise ValueError(f"no bot token: set {TOKEN_SETTING}")
        options: dict = {
            "connect_timeout_s": self.connect_timeout_s,
            "read_timeout_s": self.read_timeout_s,
            "max_attempts": self.max_attempts,
            "max_wait_s": self.max_wait_s,
            **overrides,
        }
        return TelegramSender(self.bot_token, self.base_url, **options)


def build_telegram_resource(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> TelegramResource:
    """The resource as the code location configures it from the environment.

    Presence of the secrets is checked now, their values are resolved by Dagster at launch.
    """
    env = os.environ if environ is None else environ

    def optional(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if env.get(name, "").strip() else None

    def minutes(name: str, default: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 <= value < float("inf"):
            raise ValueError(f"{name}={raw!r}: expected a number of minutes >= 0")
        return value

    return TelegramResource(
        dedup_minutes=minutes("ALERT_DEDUP_MINUTES", 5.0),
        cooldown_high_minutes=minutes("ALERT_COOLDOWN_HIGH_MINUTES", 30.0),
        cooldown_medium_minutes=minutes("ALERT_COOLDOWN_MEDIUM_MINUTES", 60.0),
        cooldown_low_minutes=minutes("ALERT_COOLDOWN_LOW_MINUTES", 360.0),
        bot_token=optional(TOKEN_SETTING),
        chat_id=optional(CHAT_SETTING),
        ops_chat_id=optional(OPS_CHAT_SETTING),
        base_url=settings.telegram_api_base_url,
        alerts_enabled=parse_enabled(env.get(ENABLED_SETTING, "")),
        all_clear=parse_enabled(env.get(ALL_CLEAR_SETTING, ""), ALL_CLEAR_SETTING),
        daily_cap=parse_cap(env.get(CAP_SETTING, "")),
        ledger_location=optional(STATE_DSN_SETTING),
    )


def send_ops(
    telegram: TelegramResource, data_dir: Path, key: str, rule: str, lines: list[str]
) -> Outcome:
    """Record and (unless gated) send one ops message; `lines` are already-escaped HTML."""
    gate = telegram.gate(ops=True)
    chat_id, setting = telegram.target(ops=True)
    ledger = telegram.ledger(data_dir)
    with telegram.open_sender(gate, max_wait_s=20) as sender:
        return deliver(
            ledger,
            sender,
            key=key,
            coin=OPS,
            signals=[SignalRef(rule, "HIGH")],
            chat_id=chat_id,
            render=lambda fresh, held: ["\n".join(["🛠 <b>cg-pipeline ops</b>", *lines])],
            suppress_reason=gate,
            chat_setting=setting,
        )
