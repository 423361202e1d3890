"""Dagster event log storages that write a batch of events in one transaction.

A backfill run over a date range records one ASSET_MATERIALIZATION_PLANNED event per (asset,
partition) when the run is created and one ASSET_MATERIALIZATION per (asset, partition) when
the step yields: 2,555 of each for seven assets over 365 days. Dagster hands each group of them
to `store_event_batch` when DAGSTER_EVENT_BATCH_SIZE is set, but the stock SQLite storage then
stores them one at a time anyway (a new engine, connection and commit per statement: about
12 ms an event here), and the stock PostgreSQL storage batches materializations only, storing
planned events one connection at a time. These subclasses store any batch Dagster may send in
one transaction per database, with the same rows, tags and asset-record updates as
`store_event` writes for each event, so every partition keeps its own planned and
materialization events (the UI's per-partition materialized / in-progress / failed status).

Each class sets DAGSTER_EVENT_BATCH_SIZE (when unset) as it is constructed: Dagster reads the
variable at every event, in whichever process holds the instance (the webserver or daemon that
creates a run and logs its planned events, and the run worker), and every such process builds
this storage from dagster.yaml first. Configure them in dagster.yaml as `event_log_storage`
(see `cg_assets.launcher` for SQLite, deploy/ for PostgreSQL).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.event_api import EventLogEntry
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# Events per batch: one asset's days of a year-long backfill fit in one transaction, and a
# transaction of this size stays well under a second.
EVENT_BATCH_SIZE = "1000"
BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# The PostgreSQL event log's connection pool: one kept open, a few more under concurrency,
# none older than an hour (a server or proxy may drop idle connections).
POOL_OVERFLOW = 4
POOL_RECYCLE_S = 3600


def enable_event_batches() -> None:
    """Let Dagster hand batchable events to `store_event_batch` (unless configured already)."""
    os.environ.setdefault(BATCH_SIZE_VARIABLE, EVENT_BATCH_SIZE)


def _storable(events: Sequence[EventLogEntry]) -> list[EventLogEntry]:
    """The events `store_event` would store: asset failures only where the storage keeps them."""
    return [e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize]


def _index_asset_events(
    storage: SqlEventLogStorage, conn: Any, events: Sequence[EventLogEntry], ids: Sequence[int]
) -> None:
    """The asset tags and asset-record updates `store_event` makes, on one connection.

    The asset record keeps the latest event of each kind per asset (its last materialization,
    last run), so only the last of each kind in the batch is written to it: every earlier
    write would be overwritten, and each serializes a whole event.
    """
    asset = [
        (e, i) for e, i in zip(events, ids, strict=True) if e.dagster_event_type in ASSET_EVENTS
    ]
    if not asset:
        return
    storage._store_asset_event_tags(conn, [e for e, _ in asset], [i for _, i in asset])
    latest = {(e.dagster_event.asset_key, e.dagster_event_type): (e, i) for e, i in asset}
    for event, event_id in sorted(latest.values(), key=lambda pair: pair[1]):
        storage._store_asset_event(conn, event, event_id)


def _inserted_ids(conn: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert `rows` into the event log table of `conn`, returning their ids in order.

    One statement executed for many parameter sets: SQLAlchemy compiles it once and sends the
    rows in as few round trips as the driver allows ("insertmanyvalues"), where one INSERT
    with a VALUES list per row would be compiled anew for every batch size.
    """
    insert = SqlEventLogStorageTable.insert().returning(
        SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
    )
    return [int(row[0]) for row in conn.execute(insert, list(rows))]


def _index_check_planned(
    storage: SqlEventLogStorage,
    conn: Any,
    events: Sequence[EventLogEntry],
    rows: Sequence[dict[str, Any]],
    ids: Sequence[int],
) -> None:
    """The PLANNED rows of the asset-check executions table, one per check and partition.

    As `store_asset_check_event` writes them, except that each planned event is serialized
    once rather than once per partition (365 times per check in a year's backfill).
    """
    values = []
    for event, row, event_id in zip(events, rows, ids, strict=True):
        if event.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
            continue
        planned = event.get_dagster_event().event_specific_data
        subset = planned.partitions_subset
        values += [
            {
                "asset_key": planned.asset_key.to_string(),
                "check_name": planned.check_name,
                "partition": partition,
                "run_id": event.run_id,
                "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
                "evaluation_event": row["event"],
                "evaluation_event_timestamp": storage._event_insert_timestamp(event),
                "evaluation_event_storage_id": event_id,
            }
            for partition in (subset.get_partition_keys() if subset else [None])
        ]
    if values:
        conn.execute(AssetCheckExecutionsTable.insert(), values)


def _index_batch(
    storage: SqlEventLogStorage,
    conn: Any,
    events: Sequence[EventLogEntry],
    rows: Sequence[dict[str, Any]],
) -> list[int]:
    """Everything `store_event` writes to the index database for `events` (as rows of the
    event log table), in one transaction on `conn`; returns the events' ids. Check
    evaluations (never batched by Dagster) are left to the caller."""
    ids = _inserted_ids(conn, rows)
    _index_asset_events(storage, conn, events, ids)
    _index_check_planned(storage, conn, events, rows, ids)
    return ids


def _store_evaluations(
    storage: SqlEventLogStorage, events: Sequence[EventLogEntry], ids: Sequence[int]
) -> None:
    for event, event_id in zip(events, ids, strict=True):
        if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            storage.store_asset_check_event(event, event_id)


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (one database per run plus the `index` database), batched."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        enable_event_batches()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        events = _storable(events)
        rows = [self._event_to_row(e) for e in events]  # each event serialized once
        by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event, row in zip(events, rows, strict=True):
            by_run[event.run_id].append(row)
        for run_id, run_rows in by_run.items():
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), run_rows)
        # The index database mirrors asset and asset-check events, as `store_event` does.
        mirrored = [
            (e, r)
            for e, r in zip(events, rows, strict=True)
            if e.dagster_event_type in ASSET_EVENTS | ASSET_CHECK_EVENTS
        ]
        if not mirrored:
            return
        kept = [e for e, _ in mirrored]
        with self.index_transaction() as conn:
            ids = _index_batch(self, conn, kept, [r for _, r in mirrored])
        _store_evaluations(self, kept, ids)


class BatchingPostgresEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres's event log, storing planned events in batches too."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        enable_event_batches()
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        # dagster-postgres opens a new connection (a new server process) for every statement
        # group, twice per event it stores one by one; the run's step and check events pay
        # that. One pooled connection per process (more only while several threads write),
        # as dagster-postgres itself keeps in the webserver (`optimize_for_webserver`).
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=POOL_OVERFLOW,
            pool_recycle=POOL_RECYCLE_S,
            pool_pre_ping=True,
        )

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchingPostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        types = {e.get_dagster_event().event_type for e in events}
        if types in (
            {DagsterEventType.ASSET_MATERIALIZATION},
            {DagsterEventType.ASSET_OBSERVATION},
        ):
            super().store_event_batch(events)  # dagster-postgres batches these itself
            return
        events = _storable(events)
        if not events:
            return
        with self.index_transaction() as conn:
            ids = _index_batch(self, conn, events, [self._event_to_row(e) for e in events])
        _store_evaluations(self, events, ids)


def sqlite_instance_config(dagster_home: str) -> dict[str, Any]:
    """The dagster.yaml entries for the batching SQLite event log under `dagster_home` (where
    Dagster's default SQLite storage keeps it, so an existing instance keeps its history)."""
    return {
        "event_log_storage": {
            "module": __name__,
            "class": BatchingSqliteEventLogStorage.__name__,
            "config": {"base_dir": os.path.join(dagster_home, "history", "runs")},
        }
    }


def postgres_instance_config(postgres_url: str) -> dict[str, Any]:
    """The dagster.yaml entries for an instance on PostgreSQL with the batching event log.

    Separate storage keys rather than `storage: postgres:`, which names dagster-postgres's own
    event log and cannot be combined with them. `postgres_url` must name the psycopg2 driver
    (`postgresql+psycopg2://`): SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3.
    """
    config = {"postgres_url": postgres_url}
    return {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": config,
        },
        "event_log_storage": {
            "module": __name__,
            "class": BatchingPostgresEventLogStorage.__name__,
            "config": config,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": config,
        },
    }
