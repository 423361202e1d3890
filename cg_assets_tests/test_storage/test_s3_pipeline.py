"""The pipeline on an S3 lake, end to end: the sidecar publishes its segments to the store,
the heads-up sensor finds a burst in their summaries there, the spool sensor requests them, a
real run ingests them and a market asset is materialized against the simulator; everything
reads back through `Catalog.session()`, and nothing of the lake or the spool is written to the
code location's own data directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cg_assets.definitions import build_defs, build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.settings import Settings
from cg_assets.sim import LiquidationFeed
from cg_assets.storage import Catalog, IngestedRanges, Lake
from cg_assets_tests.s3_harness import MotoServer
from cg_assets_tests.sidecar_harness import wait_until
from cg_assets_tests.test_liquidations.test_sensors import run_request, tick
from ws_sidecar.spool import list_segments
from ws_sidecar.store import open_store

pytestmark = pytest.mark.slow


def test_market_and_liquidations_on_an_s3_lake(
    env: dict[str, str],
    s3_lake_url: str,
    s3_server: MotoServer,
    make_sidecar,
    feed: LiquidationFeed,
    tmp_path: Path,
):
    settings = Settings.from_env({**env, "CG_LAKE_URL": s3_lake_url})
    sidecar = make_sidecar(
        CG_LAKE_URL=s3_lake_url, CG_DATA_DIR=str(tmp_path / "sidecar-node"), **s3_server.env
    )
    sidecar.wait_status(lambda s: s["last_published_seq"] >= 2, 30, "segments in the store")
    store_spool = open_store(s3_lake_url).path("spool")
    published = list_segments(store_spool)
    assert len(published) >= 3

    defs = build_defs(settings)
    with dg.instance_for_test() as instance:
        # The heads-up sensor reads the segments' summaries from the store.
        cursor = tick(defs, "liquidation_headsup_sensor", None, instance).cursor
        feed.burst("BTC", 20e6, 40)

        def headsup() -> list[dg.RunRequest]:
            nonlocal cursor
            result = tick(defs, "liquidation_headsup_sensor", cursor, instance)
            cursor = result.cursor or cursor
            return result.run_requests or []

        [alert] = wait_until(headsup, 30, "the heads-up sensor to see the burst in the store")
        assert alert.tags["coin"] == "BTC"
        sidecar.wait_status(lambda s: s["last_published_seq"] == s["last_seq"], 30, "caught up")
        request = tick(defs, "liquidation_spool_sensor", None, instance).run_requests[0]
        first, last = (request.run_config["ops"]["liquidation_orders"]["config"][k]
                       for k in ("first_seq", "last_seq"))  # fmt: skip
        assert first == published[0].seq
        run = run_request(defs, request, instance)
        assert run.success
        [orders] = run.get_asset_materialization_events()
        added = orders.materialization.metadata["added"].value
        assert added > 0
        assert orders.materialization.metadata["lake_path"].value == (
            f"{s3_lake_url}/lake/liquidation_orders"
        )
        assert [c.passed for c in run.get_asset_check_evaluations()] == [True, True, True]

        day = (datetime.now(UTC) - timedelta(days=2)).date()
        market = dg.materialize(
            [build_market_assets(settings)],
            resources=build_resources(settings),
            instance=instance,
            selection=["price_ohlc"],
            partition_key=day.isoformat(),
        )
        assert market.success
        assert all(c.passed for c in market.get_asset_check_evaluations())
        [bars] = market.get_asset_materialization_events()
        bar_rows = bars.materialization.metadata["dagster/row_count"].value
        assert bar_rows > 0
    sidecar.terminate()

    lake = Lake.for_settings(settings)
    assert not lake.is_local
    assert IngestedRanges(lake, "liquidation_orders").ranges() == [(first, last)]
    with Catalog(lake).session() as con:
        assert con.sql("SELECT count(*) FROM liquidation_orders").fetchall() == [(added,)]
        assert con.execute(
            "SELECT count(*) FROM price_ohlc WHERE date = $day", {"day": day}
        ).fetchone() == (bar_rows,)
    # This node's data dir holds no lake, no spool and no views: the store has them all.
    assert not (settings.data_dir / "lake").exists()
    assert not (settings.data_dir / "spool").exists()
    assert not (settings.data_dir / "warehouse.duckdb").exists()
