"""Concurrent runs never fail on a lock, even while a user's DuckDB session reads the catalog.

Real processes throughout: the Dagster CLI materializing different partitions in parallel,
and a separate process holding the catalog open and querying it the whole time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance

from cg_assets.storage import Catalog, Lake

pytestmark = pytest.mark.slow

READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("open", flush=True)
queries = 0
for line in sys.stdin:
    if line.strip() == "stop":
        break
    if sys.argv[2] == "ro":
        con.execute("SELECT count(*) FROM price_ohlc").fetchall()
    queries += 1
    print(queries, flush=True)
print("done", queries, flush=True)
"""


def start_reader(catalog: Path, mode: str) -> subprocess.Popen:
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(catalog), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline().strip() == "open"
    return reader


def query(reader: subprocess.Popen) -> None:
    reader.stdin.write("q\n")
    reader.stdin.flush()
    assert reader.stdout.readline().strip().isdigit()


def materialize_cli(env: dict[str, str], day: str, select: str, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "cg_assets",
        "--select",
        select,
        "--partition",
        day,
    ]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_parallel(
    env: dict[str, str], days: list[str], reader: subprocess.Popen, logs: Path
) -> None:
    procs = [
        materialize_cli(env, d, "price_ohlc,open_interest_ohlc", logs / f"{d}.log") for d in days
    ]
    for proc in procs:
        while proc.poll() is None:
            query(reader)  # the user keeps querying while the runs write
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
    for proc, day in zip(procs, days, strict=True):
        out = (logs / f"{day}.log").read_text()
        assert proc.returncode == 0, out[-3000:]
        assert "RUN_SUCCESS" in out


@pytest.fixture
def proc_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A DAGSTER_HOME whose SQLite storage already exists.

    Two Dagster processes that both find a brand-new DAGSTER_HOME race to create the same
    tables and one dies with "table secondary_indexes already exists" (seen in CI). Users meet
    an initialised home (`make demo` starts `dagster dev` first), so the test does the same.
    """
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() == 0
    return {**os.environ, **env, "DAGSTER_HOME": str(home)}


def days(n: int) -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=i + 2)).isoformat() for i in range(n)]


def test_parallel_runs_while_a_session_queries_the_catalog(proc_env, settings, tmp_path):
    first, *others = days(4)
    boot = materialize_cli(proc_env, first, "price_ohlc,open_interest_ohlc", tmp_path / "boot.log")
    assert boot.wait(timeout=300) == 0, (tmp_path / "boot.log").read_text()[-3000:]
    catalog = Catalog(Lake(settings.data_dir))
    reader = start_reader(catalog.path, "ro")
    try:
        run_parallel(proc_env, others, reader, tmp_path)
    finally:
        reader.communicate("stop\n", timeout=30)
    lake = Lake(settings.data_dir)
    for day in [first, *others]:
        assert lake.read_days("price_ohlc", [datetime.fromisoformat(day).date()]).num_rows == 4 * 24


def test_first_runs_succeed_even_when_a_session_holds_the_catalog_for_writing(
    proc_env, settings, tmp_path
):
    catalog = Catalog(Lake(settings.data_dir))
    catalog.path.parent.mkdir(parents=True, exist_ok=True)
    holder = start_reader(catalog.path, "rw")
    try:
        run_parallel(proc_env, days(2), holder, tmp_path)
    finally:
        holder.communicate("stop\n", timeout=30)
    # The data landed; the deferred views appear with the next catalog refresh.
    assert catalog.ensure_views(["price_ohlc"]).created == ["price_ohlc"]
