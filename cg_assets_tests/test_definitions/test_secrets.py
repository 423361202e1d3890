"""The API key reaches CoinGlass as a header and nowhere else: not logs, events, config, errors."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from cg_assets.definitions import build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.settings import Settings
from cg_assets.sim import SimulatorServer, SyntheticMarket

KEY = "cg-secret-4f9a2b7c1d"


@pytest.mark.parametrize(("key_plan", "succeeds"), [("professional", True), ("hobbyist", False)])
def test_key_never_appears_in_the_event_log(
    env,
    market: SyntheticMarket,
    monkeypatch: pytest.MonkeyPatch,
    caplog,
    key_plan: str,
    succeeds: bool,
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CG_API_KEY", KEY)
    day = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    with SimulatorServer(market, plan="professional", keys={KEY: key_plan}) as sim:
        settings = Settings.from_env({**env, "CG_API_BASE_URL": sim.base_url})
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [build_market_assets(settings)],
                resources=build_resources(settings),
                instance=instance,
                partition_key=day,
                selection=["price_ohlc", "taker_volume"],
                raise_on_error=False,
            )
            assert result.success is succeeds
            records = instance.all_logs(result.run_id)
            run = instance.get_run_by_id(result.run_id)
    text = "\n".join(repr(r) for r in records) + repr(run) + caplog.text
    assert len(records) > 10
    if not succeeds:
        assert "Upgrade plan" in text  # the failure itself is reported...
    assert KEY not in text  # ...without the key
    assert KEY[-8:] not in text
