"""Telegram alerts: message formatting, `telegram_alerts`, the liquidation heads-up flow and
run-failure ops alerts.

Delivery itself (ledger, sender, `deliver`) is `cg_assets.telegram`, and the resource is
`cg_assets.resources.TelegramResource`, below every domain, so that any domain can send.
`build_alert_defs` is imported on first access, so the formatter stays importable without
Dagster (a benchmark).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "build_alert_defs":
        from cg_assets.alerts.definitions import build_alert_defs

        return build_alert_defs
    raise AttributeError(f"module 'cg_assets.alerts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["build_alert_defs"]
