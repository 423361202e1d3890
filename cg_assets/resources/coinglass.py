"""The CoinGlass client as a Dagster resource.

The key arrives through `EnvVar`, so Dagster resolves it when a run starts and shows only the
variable's name in the UI and run config. One client (one pooled session) serves every thread
of a run, and every run on the machine keeps to the key's one request schedule.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from cg_assets.coinglass import CoinGlassClient
from cg_assets.coinglass.slots import slot_store
from cg_assets.resources.state import unshared_state_warning
from cg_assets.settings import DEFAULT_API_BASE_URL

# The concurrency pool of every step that calls CoinGlass. Its limit (the instance's
# `concurrency.pools`) caps how many such steps run at once across all runs; the request rate
# itself is the shared schedule's business (`schedule_location`), since a pool has no window.
COINGLASS_POOL = "coinglass"


class MissingApiKeyError(RuntimeError):
    """No key while pointing at the real API: say how to get going instead of a 401 later."""


class CoinGlassResource(dg.ConfigurableResource):
    """CoinGlass V4 REST client: plan-aware rate limiting, retries, pagination."""

    base_url: str = DEFAULT_API_BASE_URL
    api_key: str | None = None
    plan: str = "standard"
    rate_limit_per_min: int | None = None
    timeout_s: float = 10.0
    max_attempts: int = 6
    # Where the key's request schedule shared by every run lives: a SQLite file (one machine)
    # or a PostgreSQL DSN (a deployment; given as EnvVar("CG_STATE_DSN"), so it is never shown).
    # None keeps the schedule per process.
    schedule_location: str | None = None

    _client: CoinGlassClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        warning = unshared_state_warning(
            context.instance, self.schedule_location, "the API key's request schedule"
        )
        if warning and context.log:
            context.log.warning(warning)
        self._client = self.make_client()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    def make_client(self) -> CoinGlassClient:
        if not self.api_key and self.base_url.rstrip("/") == DEFAULT_API_BASE_URL:
            raise MissingApiKeyError(
                "CG_API_KEY is not set and CG_API_BASE_URL points at the real CoinGlass API."
                " Set CG_API_KEY in .env (see README: Using a real CoinGlass key), or run"
                " `make demo` to use the bundled offline simulator."
            )
        return CoinGlassClient(
            self.base_url,
            self.api_key or None,
            self.plan,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            rate_limit_per_min=self.rate_limit_per_min,
            slot_store=slot_store(self.schedule_location) if self.schedule_location else None,
        )

    @property
    def client(self) -> CoinGlassClient:
        if self._client is None:
            self._client = self.make_client()
        return self._client
