"""The deployment's files (deploy/) as the tests read them, and the production instance config
turned into one that runs here: the same file with only the run launcher swapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# Runs as subprocesses of the code server: there is no Docker daemon (or cluster) here.
LOCAL_RUN_LAUNCHER = {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
# The variables deploy/dagster.yaml reads Dagster's PostgreSQL storage from.
POSTGRES_VARS = ("HOST", "PORT", "USER", "PASSWORD", "DB")


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def load_all(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def local_instance_yaml() -> str:
    """deploy/dagster.yaml with the DefaultRunLauncher instead of Docker's; nothing else
    differs, so what runs here is the production configuration."""
    config = load("dagster.yaml")
    config["run_launcher"] = LOCAL_RUN_LAUNCHER
    return yaml.safe_dump(config, sort_keys=False)


def postgres_env(dsn: str) -> dict[str, str]:
    """The DAGSTER_POSTGRES_* variables for a postgresql://user[:password]@host:port/db DSN."""
    url = urlsplit(dsn)
    values = (url.hostname, str(url.port or 5432), url.username, url.password or "", url.path[1:])
    return {
        f"DAGSTER_POSTGRES_{name}": str(v) for name, v in zip(POSTGRES_VARS, values, strict=True)
    }
