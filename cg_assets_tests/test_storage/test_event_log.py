"""The batching event log storages, through a real DagsterInstance on SQLite and PostgreSQL.

A market backfill over several days is one run; it must still leave Dagster what it needs
for per-partition status: one planned and one materialization event per (asset, day), the
day's own row count on each, and the check evaluations of the run; and the same records the
stock storage leaves (the equivalence test).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable

from cg_assets.definitions import build_resources
from cg_assets.market.assets import build_market_assets
from cg_assets.market.checks import CHECKS
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.resources import CoinGlassResource
from cg_assets.settings import Settings
from cg_assets.storage import Lake
from cg_assets.storage.event_log import (
    BATCH_SIZE_VARIABLE,
    BatchingPostgresEventLogStorage,
    BatchingSqliteEventLogStorage,
    postgres_instance_config,
    sqlite_instance_config,
)

DAYS = 3
MATERIALIZED = dg.DagsterEventType.ASSET_MATERIALIZATION
PLANNED = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED


@pytest.fixture
def batch_size() -> Iterator[None]:
    """Leave DAGSTER_EVENT_BATCH_SIZE as it was (the batching storages set it)."""
    before = os.environ.get(BATCH_SIZE_VARIABLE)
    yield
    if before is None:
        os.environ.pop(BATCH_SIZE_VARIABLE, None)
    else:
        os.environ[BATCH_SIZE_VARIABLE] = before


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request, tmp_path: Path, batch_size: None) -> Iterator[dg.DagsterInstance]:
    os.environ.pop(BATCH_SIZE_VARIABLE, None)
    home = tmp_path / "dagster_home"
    home.mkdir()
    if request.param == "sqlite":
        overrides = sqlite_instance_config(str(home))
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        overrides = postgres_instance_config(dsn.replace("postgresql://", "postgresql+psycopg2://"))
    with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as inst:
        yield inst


def backfill(
    settings: Settings, instance: dg.DagsterInstance, first: date, last: date
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_market_assets(settings)],
        resources={
            **build_resources(settings),
            "coinglass": CoinGlassResource(
                base_url=settings.api_base_url, plan=settings.plan.value, max_attempts=2
            ),
        },
        instance=instance,
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )


def planned(instance: dg.DagsterInstance, key: str) -> list[str]:
    found = instance.get_event_records(dg.EventRecordsFilter(PLANNED, asset_key=dg.AssetKey(key)))
    return sorted(r.partition_key for r in found)


def run_days(today: date) -> list[date]:
    last = today - timedelta(days=2)
    return [last - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]


def test_each_day_has_its_planned_event_materialization_and_row_count(
    settings: Settings, instance: dg.DagsterInstance
):
    storage = instance.event_log_storage
    assert isinstance(storage, BatchingSqliteEventLogStorage | BatchingPostgresEventLogStorage)
    days = run_days(datetime.now(UTC).date())
    result = backfill(settings, instance, days[0], days[-1])
    assert result.success
    assert os.environ[BATCH_SIZE_VARIABLE]  # the storage turned Dagster's batches on

    # Stored once each: a batch that failed part-way and was stored again event by event
    # (Dagster's fallback) would leave duplicates in the run's log.
    logged = Counter(
        e.dagster_event.asset_key.to_user_string()
        for e in instance.all_logs(result.run_id, of_type={MATERIALIZED, PLANNED})
    )
    assert logged == Counter({a.name: 2 * DAYS for a in MARKET_ASSETS})

    lake = Lake(settings.data_dir)
    partitions = [d.isoformat() for d in days]
    for asset in MARKET_ASSETS:
        mats = instance.fetch_materializations(dg.AssetKey(asset.name), limit=100).records
        assert sorted(r.partition_key for r in mats) == partitions
        for record in mats:
            meta = record.asset_materialization.metadata
            day = date.fromisoformat(record.partition_key)
            rows = lake.read_days(asset.name, [day]).num_rows
            assert rows > 0
            assert meta["dagster/row_count"].value == rows  # the day's rows, not the run's
            assert ("preview" in meta) == (day == days[-1])
        assert planned(instance, asset.name) == partitions
        assert instance.get_materialized_partitions(dg.AssetKey(asset.name)) == set(partitions)
        # The asset record holds the run's last materialization (the last day's).
        [entry] = instance.get_asset_records([dg.AssetKey(asset.name)])
        last = entry.asset_entry.last_materialization_record
        assert last.partition_key == partitions[-1]
        assert last.storage_id == max(r.storage_id for r in mats)

    # The checks' executions table holds a planned row per (check, day), as the stock storage
    # writes it (from one serialized planned event per check).
    with instance.event_log_storage.index_connection() as conn:
        executions = conn.execute(
            db.select(
                AssetCheckExecutionsTable.c.asset_key,
                AssetCheckExecutionsTable.c.check_name,
                AssetCheckExecutionsTable.c.partition,
            ).where(AssetCheckExecutionsTable.c.partition.is_not(None))
        ).fetchall()
    assert Counter(executions) == Counter(
        {
            (dg.AssetKey(a.name).to_string(), c, p): 1
            for a in MARKET_ASSETS
            for c in CHECKS
            for p in partitions
        }
    )

    evaluations = Counter(
        (e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
    )
    assert evaluations == Counter({(a.name, c): 1 for a in MARKET_ASSETS for c in CHECKS})
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_failed_run_marks_each_of_its_days_failed(
    settings: Settings, instance: dg.DagsterInstance, sim
):
    """The per-partition planned events are what the UI's failed partitions come from."""
    days = run_days(datetime.now(UTC).date())
    sim.faults.malformed_json_rate = 1.0
    result = backfill(settings, instance, days[0], days[-1])
    assert not result.success
    partitions = [d.isoformat() for d in days]
    for asset in MARKET_ASSETS:
        assert planned(instance, asset.name) == partitions
        attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(  # noqa: E501
            dg.AssetKey(asset.name)
        )
        assert sorted(attempts) == partitions
        assert {run_id for run_id, _ in attempts.values()} == {result.run_id}
