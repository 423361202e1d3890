"""Telegram alerts: the alert ledger, message formatting, delivery and `telegram_alerts`.

The pieces are reusable outside the asset (the heads-up flow and ops alerts send through the
same ledger and sender): `TelegramResource.gate/ledger/sender` and `delivery.deliver`.
`build_alert_defs` and `TelegramResource` are imported on first access, so the ledger and the
formatter stay importable without Dagster (a process racing for claims, a benchmark).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "build_alert_defs":
        from cg_assets.alerts.definitions import build_alert_defs

        return build_alert_defs
    if name == "TelegramResource":
        from cg_assets.alerts.resources import TelegramResource

        return TelegramResource
    raise AttributeError(f"module 'cg_assets.alerts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["TelegramResource", "build_alert_defs"]
