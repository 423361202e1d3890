"""A run on a PostgreSQL instance without CG_STATE_DSN says that its shared state is not
shared; a real PostgreSQL server holds the instance (postgres_harness)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cg_assets.resources import CoinGlassResource, TelegramResource
from cg_assets.resources.state import unshared_state_warning


@dg.asset
def uses_both(coinglass: CoinGlassResource, telegram: TelegramResource) -> None:
    """Nothing: setting the resources up is what is looked at."""


def test_a_postgresql_instance_without_a_state_dsn_warns_in_the_run(
    postgres_dsn: str, tmp_path: Path
):
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    schedule = str(tmp_path / "rate_schedule.sqlite")
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as pg:
        assert unshared_state_warning(pg, postgres_dsn, "the alert ledger") == ""
        result = dg.materialize(
            [uses_both],
            resources={
                "coinglass": CoinGlassResource(
                    base_url="http://127.0.0.1:9", schedule_location=schedule
                ),
                "telegram": TelegramResource(),
            },
            instance=pg,
        )
        assert result.success
        warnings = [
            e.user_message
            for e in pg.all_logs(result.run_id)
            if "runs on other nodes do not share it" in e.user_message
        ]
    assert sorted(w.split(", but ")[1].split(" is ")[0] for w in warnings) == [
        "the API key's request schedule",
        "the alert ledger",
    ]
    assert all("Set CG_STATE_DSN to a PostgreSQL URL" in w for w in warnings)
    with dg.instance_for_test() as sqlite_instance:
        assert unshared_state_warning(sqlite_instance, schedule, "the alert ledger") == ""
