"""The production dagster.yaml, checked by Dagster itself: its instance schema and the
DockerRunLauncher's own config schema without a database, then loaded for real against a
PostgreSQL server (the concurrency limits, monitoring, retries and retention as Dagster reads
them). The Helm values must carry the same settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.config import pg_config
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster_docker import DockerRunLauncher

from cg_assets.storage.event_log import BatchingPostgresEventLogStorage
from cg_assets_tests.deploy_files import DEPLOY, load, local_instance_yaml, postgres_env

STORAGE_KEYS = ("run_storage", "event_log_storage", "schedule_storage")

ENV = {
    "DAGSTER_POSTGRES_HOST": "db.example",
    "DAGSTER_POSTGRES_PORT": "5433",
    "DAGSTER_POSTGRES_USER": "cg_user",
    "DAGSTER_POSTGRES_PASSWORD": "s3cret",
    "DAGSTER_POSTGRES_DB": "cg_db",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the production dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(load_text("dagster.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def load_text(name: str) -> str:
    return (DEPLOY / name).read_text()


def test_the_production_instance_passes_dagsters_schema(home: Path):
    config, instance_class = dagster_instance_config(str(home))
    assert instance_class is None
    assert "storage" not in config
    storages = {key: config[key] for key in STORAGE_KEYS}
    assert {(s["module"], s["class"]) for s in storages.values()} == {
        ("dagster_postgres.run_storage", "PostgresRunStorage"),
        ("cg_assets.storage.event_log", "BatchingPostgresEventLogStorage"),
        ("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
    }
    for storage in storages.values():
        assert storage["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    checked = validate_config(DockerRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors


def test_the_storage_credentials_come_from_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
):
    """The file names variables, not values, and each resolves to what the environment says."""
    text = load_text("dagster.yaml")
    for value in ENV.values():
        assert value not in text
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(home))
    for key in STORAGE_KEYS:
        resolved = process_config(pg_config(), config[key]["config"])
        assert resolved.success, resolved.errors
        db = resolved.value["postgres_db"]
        assert (db["hostname"], db["port"], db["username"], db["password"], db["db_name"]) == (
            "db.example", 5433, "cg_user", "s3cret", "cg_db"
        )  # fmt: skip


def test_an_invalid_edit_is_caught(home: Path):
    """The schema check is not vacuous: limits given twice are refused, as Dagster documents."""
    text = load_text("dagster.yaml").replace(
        "    dequeue_use_threads: true\n",
        "    dequeue_use_threads: true\n    max_concurrent_runs: 3\n",
    )
    (home / "dagster.yaml").write_text(text)
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(home))


@pytest.fixture
def instance(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """The production file loaded for real on a PostgreSQL database, as the deployment's
    processes load it (only the launcher swapped: there is no Docker daemon here)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_yaml())
    for name, value in postgres_env(postgres_dsn).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(tmp_path / "compute_logs"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_dagster_runs_on_the_production_settings(instance: dg.DagsterInstance):
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    logs = instance.compute_log_manager
    assert type(logs).__name__ == "LocalComputeLogManager"
    assert logs._base_dir.endswith("/compute_logs")  # resolved from DAGSTER_COMPUTE_LOGS_DIR
    assert isinstance(instance.event_log_storage, SqlEventLogStorage)
    assert isinstance(instance.event_log_storage, BatchingPostgresEventLogStorage)
    settings = instance.get_concurrency_config()
    queue = settings.run_queue_config
    assert queue.max_concurrent_runs == 6
    assert [(t["key"], t["limit"]) for t in queue.tag_concurrency_limits] == [
        ("dagster/backfill", 2)
    ]
    assert settings.pool_config.default_pool_limit == 4
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure
    # The pool the API-calling assets claim gets the default limit once a step asks for it.
    instance.event_log_storage.initialize_concurrency_limit_to_default("coinglass")
    assert instance.event_log_storage.get_concurrency_info("coinglass").slot_count == 4


def test_the_helm_values_carry_the_same_settings():
    """The chart writes the Kubernetes instance's dagster.yaml from these values."""
    instance, values = load("dagster.yaml"), load("helm/values.yaml")
    runs, pools = instance["concurrency"]["runs"], instance["concurrency"]["pools"]
    chart = values["concurrency"]
    assert chart["enabled"] is True
    assert chart["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert chart["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert chart["pools"] == {
        "defaultLimit": pools["default_limit"],
        "granularity": pools["granularity"],
    }
    daemon = values["dagsterDaemon"]
    monitoring = instance["run_monitoring"]
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "maxResumeRunAttempts": monitoring["max_resume_run_attempts"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
    }
    retries = instance["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    for kind, key in (("sensors", "sensors"), ("schedules", "schedules")):
        assert daemon[kind] == {
            "useThreads": instance[key]["use_threads"],
            "numWorkers": instance[key]["num_workers"],
        }
    retention = values["retention"]
    assert retention["enabled"] is True
    for chart_key, key in (("schedule", "schedule"), ("sensor", "sensor"),
                           ("autoMaterialize", "auto_materialize")):  # fmt: skip
        assert (
            retention[chart_key]["purgeAfterDays"] == instance["retention"][key]["purge_after_days"]
        )
    assert (
        values["postgresql"]["postgresqlScheme"]
        == (instance["event_log_storage"]["config"]["postgres_db"]["scheme"])
    )
