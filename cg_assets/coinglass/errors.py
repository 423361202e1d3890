"""Typed CoinGlass failures, so callers can tell "fix your config" from "try again later".

CoinGlass mostly reports errors as HTTP 200 with a non-"0" body `code` (reference §2), and the
same code 401 means both "bad key" and "plan too low". Each class here names one cause and
carries a message a user can act on; `transient` tells the client whether a retry can help.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from cg_assets.coinglass.plans import Plan, lowest_plan_for_interval, min_plan_for_path

_SECRET_PARAM = re.compile(r"key|secret|token|signature|password", re.IGNORECASE)
MASK = "***"


def mask_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Blank any secret-looking parameter.

    The key travels in a header, never in params; this guards against a caller who passes it
    as a query parameter anyway, so it can still never reach a log line or an exception.
    """
    return {k: MASK if _SECRET_PARAM.search(k) else v for k, v in (params or {}).items()}


class CoinGlassError(Exception):
    """A CoinGlass call that failed; str() names the path, the params and the server's words."""

    transient: ClassVar[bool] = False

    def __init__(
        self,
        code: int | str | None,
        msg: str,
        path: str,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.msg = msg
        self.path = path
        self.params = mask_params(params)
        self.attempts: int | None = None
        self.elapsed_s: float | None = None
        super().__init__(code, msg, path)

    def gave_up(self, attempts: int, elapsed_s: float) -> CoinGlassError:
        """Record how long retrying went on, so the final error says why it stopped."""
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        return self

    def explanation(self) -> str:
        """What went wrong, in the server's words; subclasses add advice."""
        return f"code {self.code}: {self.msg}" if self.code is not None else self.msg

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        where = f"{self.path} ({args})" if args else self.path
        text = f"CoinGlass {where} failed: {self.explanation()}"
        if self.attempts is not None and self.elapsed_s is not None:
            tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
            text += f" (gave up after {tries} over {self.elapsed_s:.1f} s)"
        return text


class CoinGlassPlanError(CoinGlassError):
    """The key's plan may not call this endpoint or interval; retrying cannot help."""

    def __init__(
        self,
        code: int | str | None,
        msg: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        plan: Plan | None = None,
    ) -> None:
        super().__init__(code, msg, path, params)
        self.plan = plan

    def explanation(self) -> str:
        return f"{super().explanation()} — {self._advice()}"

    def _advice(self) -> str:
        configured = f" (CG_PLAN is {self.plan.label})" if self.plan else ""
        needed = min_plan_for_path(self.path)
        if self.plan is None or needed.rank > self.plan.rank:
            return f"this endpoint needs the {needed.label} plan or higher{configured}"
        interval = self.params.get("interval")
        floor_plan = _interval_plan(interval)
        if floor_plan is not None and floor_plan.rank > self.plan.rank:
            return (
                f"interval {interval} needs the {floor_plan.label} plan or higher{configured}; "
                "use a longer interval or upgrade"
            )
        return (
            f"the server says the key's plan does not allow this call, which needs the "
            f"{needed.label} plan{configured}; check that CG_PLAN matches the key's subscription"
        )


def _interval_plan(interval: object) -> Plan | None:
    """The lowest plan serving `interval`, or None when there is no (valid) interval."""
    if not isinstance(interval, str):
        return None
    try:
        return lowest_plan_for_interval(interval)
    except ValueError:
        return None


class CoinGlassAuthError(CoinGlassError):
    """The API key is missing or rejected; only the user can fix it."""

    def explanation(self) -> str:
        return (
            f"{super().explanation()} — the API key is missing or invalid; set CG_API_KEY "
            "to a valid CoinGlass API key"
        )


class CoinGlassBadRequest(CoinGlassError):
    """The server rejected the parameters (400/405/422); its message says which one."""


class CoinGlassNotFound(CoinGlassError):
    """The path does not exist (a real HTTP 404, usually a typo or a retired endpoint)."""


class CoinGlassRateLimited(CoinGlassError):
    """HTTP 429 that persisted through every retry."""

    transient = True

    def __init__(
        self,
        code: int | str | None,
        msg: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(code, msg, path, params)
        self.retry_after_s = retry_after_s


class CoinGlassServerError(CoinGlassError):
    """5xx, body code 500 or an unreachable server, persisting through every retry."""

    transient = True


class CoinGlassTimeout(CoinGlassError):
    """The request timed out on every attempt."""

    transient = True


class CoinGlassProtocolError(CoinGlassError):
    """A response that is not the documented envelope; usually a proxy hiccup, so retried."""

    transient = True


class PairNotListedError(CoinGlassError, LookupError):
    """The exchange lists no USDT-margined perpetual for the coin (or the exchange is unknown)."""

    def __init__(self, coin: str, exchange: str, reason: str) -> None:
        super().__init__(None, reason, "/api/futures/supported-exchange-pairs", None)
        self.coin = coin
        self.exchange = exchange

    def __str__(self) -> str:
        return (
            f"{self.coin} has no USDT-margined perpetual on {self.exchange}: {self.msg}; "
            f"drop the pair or set CG_PAIR_OVERRIDES={self.exchange}:{self.coin}=<instrument id>"
        )


def classify(
    code: str,
    msg: str,
    path: str,
    params: Mapping[str, Any] | None,
    plan: Plan | None,
) -> CoinGlassError:
    """The error for a non-success envelope `code` (also used for bare HTTP statuses).

    CoinGlass reuses 401 for "bad key" and "plan too low", and has reported a missing key as
    400, so the message decides between them. Any code not recognised is a permanent error:
    retrying an unknown condition forever would hide it.
    """
    lowered = msg.lower()
    if "upgrade" in lowered:
        return CoinGlassPlanError(code, msg, path, params, plan)
    if code in ("400", "401", "403") and ("api key" in lowered or code != "400"):
        return CoinGlassAuthError(code, msg, path, params)
    simple: dict[str, type[CoinGlassError]] = {
        "400": CoinGlassBadRequest,
        "404": CoinGlassNotFound,
        "405": CoinGlassBadRequest,
        "408": CoinGlassTimeout,
        "422": CoinGlassBadRequest,
        "429": CoinGlassRateLimited,
    }
    if code in simple:
        return simple[code](code, msg, path, params)
    if code.isdigit() and 500 <= int(code) <= 599:
        return CoinGlassServerError(code, msg, path, params)
    return CoinGlassError(code, msg, path, params)
