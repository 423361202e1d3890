"""The deployment's files read as data: the compose services, their commands, variables,
ports and health checks; the Dockerfile; the Helm values against the keys Dagster's chart
defines; the sidecar's Kubernetes manifest against the paths the sidecar serves; Prometheus
and the Grafana dashboard against the metrics the sidecar exports. `docker compose config`
validates the compose file too where a compose binary exists."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from cg_assets_tests.deploy_files import DEPLOY, POSTGRES_VARS, load, load_all
from ws_sidecar.health import HealthServer, Monitor
from ws_sidecar.stats import Stats

COMPOSE = load("docker-compose.yml")
SERVICES = COMPOSE["services"]
INSTANCE = load("dagster.yaml")
IMAGE = SERVICES["code"]["image"]
HOME = "/opt/dagster/dagster_home"


def command(service: str) -> str:
    return " ".join(SERVICES[service]["command"])


def test_the_topology_has_every_part():
    assert set(SERVICES) == {
        "postgres", "code", "webserver", "daemon", "sidecar", "prometheus", "grafana"
    }  # fmt: skip
    assert {name for name, s in SERVICES.items() if "profiles" in s} == {"prometheus", "grafana"}
    assert SERVICES["prometheus"]["profiles"] == SERVICES["grafana"]["profiles"] == ["monitoring"]


def test_one_image_runs_the_code_server_webserver_daemon_and_sidecar():
    own = {name for name, s in SERVICES.items() if s.get("image") == IMAGE}
    assert own == {"code", "webserver", "daemon", "sidecar"}
    assert SERVICES["code"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    # Run containers start from the image the code server reports.
    assert SERVICES["code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == IMAGE
    others = [s["image"] for n, s in SERVICES.items() if s.get("image") != IMAGE]
    assert all(":" in i and not i.endswith(":latest") for i in others), others


def test_the_code_location_is_a_grpc_server_the_workspace_points_at():
    code = command("code")
    assert code.startswith("dagster api grpc -m cg_assets.definitions")
    port = int(re.search(r"-p (\d+)", code).group(1))
    [entry] = load("workspace.yaml")["load_from"]
    assert entry["grpc_server"] == {"host": "code", "port": port, "location_name": "cg_assets"}
    assert SERVICES["code"]["healthcheck"]["test"][-1] == str(port)
    for service, program in (("webserver", "dagster-webserver"), ("daemon", "dagster-daemon run")):
        assert command(service).startswith(program)
        assert f"-w {HOME}/workspace.yaml" in command(service)
        assert SERVICES[service]["depends_on"]["code"] == {"condition": "service_healthy"}


def test_every_dagster_process_gets_the_storage_variables():
    storage = INSTANCE["event_log_storage"]["config"]["postgres_db"]
    names = {f"DAGSTER_POSTGRES_{n}" for n in POSTGRES_VARS}
    assert {v["env"] for v in storage.values() if isinstance(v, dict)} == names
    for service in ("code", "webserver", "daemon"):
        env = SERVICES[service]["environment"]
        assert names <= set(env), service
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
    assert (
        SERVICES["code"]["environment"]["DAGSTER_POSTGRES_PASSWORD"]
        == (SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"])
    )


def test_run_containers_get_what_a_run_needs():
    """The DockerRunLauncher passes the named variables on from the daemon's environment, so
    each must be set there; the network and the data volume are the compose file's."""
    launcher = INSTANCE["run_launcher"]["config"]
    daemon_env = SERVICES["daemon"]["environment"]
    assert set(launcher["env_vars"]) <= set(daemon_env)
    code_env = set(SERVICES["code"]["environment"]) - {"DAGSTER_CURRENT_IMAGE"}
    assert code_env <= set(launcher["env_vars"]), "a run must see what the code server sees"
    assert launcher["network"] == COMPOSE["networks"]["default"]["name"]
    [volume] = launcher["container_kwargs"]["volumes"]
    name, path = volume.split(":")
    assert name == COMPOSE["volumes"]["data"]["name"]
    assert path == daemon_env["CG_DATA_DIR"] == "/data"
    for service in ("code", "webserver", "daemon", "sidecar"):
        assert f"data:{path}" in SERVICES[service]["volumes"], service
    # The runs' output, written in run containers, read by the webserver.
    logs = INSTANCE["compute_logs"]["config"]["base_dir"]["env"]
    assert logs in launcher["env_vars"]
    assert SERVICES["webserver"]["environment"][logs].startswith(f"{path}/")
    for service in ("webserver", "daemon"):
        assert "/var/run/docker.sock:/var/run/docker.sock" in SERVICES[service]["volumes"]


def test_the_sidecar_is_reachable_for_its_health_check_and_prometheus():
    sidecar = SERVICES["sidecar"]
    env = sidecar["environment"]
    assert command("sidecar") == "python -m ws_sidecar"
    assert env["SIDECAR_HEALTH_HOST"] == "0.0.0.0"
    port = env["SIDECAR_HEALTH_PORT"]
    assert f"127.0.0.1:{port}/health/live" in " ".join(sidecar["healthcheck"]["test"])
    [job] = load("prometheus/prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"sidecar:{port}"]}]


def test_the_dockerfile_builds_a_non_root_image_with_pinned_dependencies():
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.splitlines()[3] == "FROM python:3.11-slim"
    assert 'pip install --constraint deploy/constraints.txt ".[deploy]"' in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user == ["cg"]
    assert f"COPY deploy/dagster.yaml deploy/workspace.yaml {HOME}/" in text
    assert f"DAGSTER_HOME={HOME}" in text
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert " ".join(cmd) == command("code")


def test_the_constraints_pin_what_pyproject_pins():
    pins = dict(
        line.split("==")
        for line in (DEPLOY / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    pinned = re.findall(r'"([a-z-]+)==([\d.]+)"', pyproject)
    assert len(pinned) >= 6
    for name, version in pinned:
        assert pins.get(name) == version, name


# The keys of Dagster's Helm chart that these values use, as its schema defines them
# (dagster-io/dagster helm/dagster/schema/schema/charts: dagster/values.py,
# dagster/subschema/{postgresql,run_launcher,daemon,concurrency,retention}.py and
# dagster_user_deployments/subschema/user_deployments.py). `None`: any value.
USER_DEPLOYMENT = {
    "name": None, "image": {"repository": None, "tag": None, "pullPolicy": None},
    "dagsterApiGrpcArgs": None, "codeServerArgs": None, "includeConfigInLaunchedRuns":
    {"enabled": None}, "port": None, "replicaCount": None, "env": None, "envConfigMaps": None,
    "envSecrets": None, "annotations": None, "nodeSelector": None, "affinity": None,
    "tolerations": None, "podSecurityContext": None, "securityContext": None, "resources": None,
    "livenessProbe": None, "readinessProbe": None, "startupProbe": None, "labels": None,
    "volumeMounts": None, "volumes": None,
}  # fmt: skip
TICK_RETENTION = {"purgeAfterDays": None}
CHART = {
    "global": {"postgresqlSecretName": None, "serviceAccountName": None},
    "telemetry": {"enabled": None},
    "generatePostgresqlPasswordSecret": None,
    "postgresql": {
        "postgresqlScheme": None, "image": None, "enabled": None, "postgresqlHost": None,
        "postgresqlUsername": None, "postgresqlPassword": None, "postgresqlDatabase": None,
        "postgresqlParams": None, "service": {"port": None},
    },
    "dagster-user-deployments": {
        "enabled": None, "enableSubchart": None, "imagePullSecrets": None,
        "deployments": [USER_DEPLOYMENT],
    },
    "runLauncher": {
        "type": None,
        "config": {"k8sRunLauncher": {
            "image": None, "imagePullPolicy": None, "jobNamespace": None,
            "loadInclusterConfig": None, "kubeconfigFile": None, "envConfigMaps": None,
            "envSecrets": None, "envVars": None, "volumeMounts": None, "volumes": None,
            "labels": None, "failPodOnRunFailure": None,
        }},
    },
    "dagsterDaemon": {
        "runCoordinator": {"enabled": None, "type": None, "config": {"queuedRunCoordinator": {
            "maxConcurrentRuns": None, "tagConcurrencyLimits": None,
            "dequeueIntervalSeconds": None, "dequeueNumWorkers": None, "dequeueUseThreads": None,
        }}},
        "runMonitoring": {
            "enabled": None, "startTimeoutSeconds": None, "maxResumeRunAttempts": None,
            "pollIntervalSeconds": None,
        },
        "runRetries": {"enabled": None, "maxRetries": None, "retryOnAssetOrOpFailure": None},
        "sensors": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
        "schedules": {"useThreads": None, "numWorkers": None, "numSubmitWorkers": None},
    },
    "concurrency": {
        "enabled": None,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": None},
    },
    "retention": {
        "enabled": None, "sensor": TICK_RETENTION, "schedule": TICK_RETENTION,
        "autoMaterialize": TICK_RETENTION,
    },
}  # fmt: skip


def unknown_keys(values: Any, schema: Any, path: str = "") -> list[str]:
    """The paths in `values` that `schema` does not define."""
    if schema is None:
        return []
    if isinstance(schema, list):
        return [p for i, v in enumerate(values) for p in unknown_keys(v, schema[0], f"{path}[{i}]")]
    if not isinstance(values, dict):
        return [f"{path} (expected a mapping)"]
    found = []
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        found += unknown_keys(value, schema[key], here) if key in schema else [here]
    return found


def test_the_helm_values_use_only_keys_the_chart_defines():
    values = load("helm/values.yaml")
    assert unknown_keys(values, CHART) == []
    # The check is not vacuous.
    assert unknown_keys({"runLauncher": {"typ": "K8sRunLauncher"}}, CHART) == ["runLauncher.typ"]


def test_the_helm_values_deploy_cg_assets_with_k8s_runs_on_an_external_postgres():
    values = load("helm/values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    postgres = values["postgresql"]
    assert postgres["enabled"] is False
    assert postgres["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    deployments = values["dagster-user-deployments"]
    assert deployments["enabled"] is True
    [code] = deployments["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "cg_assets.definitions"]
    assert code["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert {"repository", "tag", "pullPolicy"} <= set(code["image"])
    assert code["podSecurityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in code["volumeMounts"]}
    assert mounts["cg-data"] == code["env"]["CG_DATA_DIR"]


def kind(docs: list[dict], name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == name]
    return doc


def test_the_sidecar_manifest_probes_the_paths_the_sidecar_serves():
    docs = load_all("k8s/sidecar.yaml")
    deployment, service = kind(docs, "Deployment"), kind(docs, "Service")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SIDECAR_HEALTH_HOST"] == "0.0.0.0"
    [port] = container["ports"]
    assert str(port["containerPort"]) == env["SIDECAR_HEALTH_PORT"]
    probes = {
        name: container[name]["httpGet"]["path"] for name in ("livenessProbe", "readinessProbe")
    }
    assert probes == {"livenessProbe": "/health/live", "readinessProbe": "/health/ready"}
    server = HealthServer(Monitor(Stats(), QuietSink()))
    assert server.respond("GET /health/live HTTP/1.1")[0] == 200
    assert server.respond("GET /health/ready HTTP/1.1")[0] == 503  # not subscribed yet
    assert server.respond("GET /health/nope HTTP/1.1")[0] == 404
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == port["containerPort"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {kind(docs, "PersistentVolumeClaim")["metadata"]["name"]}


class QuietSink:
    """The two things the monitor asks the spool sink (a sidecar with nothing queued)."""

    depth = 0

    def lag_s(self) -> float:
        return 0.0


def test_the_dashboard_plots_metrics_the_sidecar_exports():
    exported = {
        line.split()[2]
        for line in Monitor(Stats(), QuietSink()).metrics().decode().splitlines()
        if line.startswith("# TYPE")
    }
    dashboard = json.loads((DEPLOY / "grafana/dashboards/cg-pipeline.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert titles == {
        "Liquidation events per second", "Spool lag", "Reconnects", "Alerts sent and suppressed"
    }  # fmt: skip
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ws_sidecar_\w+", target.get("expr", ""))
    }
    counters = {n.removesuffix("_total") for n in used}
    assert len(used) >= 4
    assert counters <= {n.removesuffix("_total") for n in exported}, used - exported
    [ledger] = [p for p in dashboard["panels"] if p["title"] == "Alerts sent and suppressed"]
    sql = ledger["targets"][0]["rawSql"]
    assert "FROM alerts" in sql
    assert "'sent'" in sql
    assert "'suppressed'" in sql
    sources = load("grafana/provisioning/datasources/datasources.yml")["datasources"]
    uids = {s["uid"] for s in sources}
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == uids


def compose_binary() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


COMPOSE_ENV = {"POSTGRES_PASSWORD": "pw", "CG_API_KEY": "key", "GRAFANA_ADMIN_PASSWORD": "gp"}


def run_compose(binary: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    return subprocess.run(
        [*binary, "-f", str(DEPLOY / "docker-compose.yml"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_accepts_the_file():
    binary = compose_binary()
    if binary is None:
        pytest.skip("no `docker compose` plugin or docker-compose here (.ci/run installs one)")
    result = run_compose(binary, COMPOSE_ENV, "--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == set(SERVICES)
    env = resolved["services"]["daemon"]["environment"]
    assert env["CG_STATE_DSN"] == "postgresql://dagster:pw@postgres:5432/dagster"
    missing = run_compose(binary, {"CG_API_KEY": "key"}, "config")
    assert missing.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in missing.stderr
