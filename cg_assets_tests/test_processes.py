"""The leftover search of the end-to-end test finds what it must: a process whose command line
does not name the data dir, in its own session, orphaned by its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cg_assets_tests.processes import PROC, processes_with_env

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="reads /proc (Linux)")


def gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether `pid` has exited (reaped or a zombie) within the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_an_orphan_in_its_own_session_is_found_by_its_environment(tmp_path: Path):
    data_dir = str(tmp_path / "data")
    env = {**os.environ, "CG_DATA_DIR": data_dir}
    # Like `dagster dev` leaving its daemon behind: a session leader starts a child and exits.
    leader = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    orphan = int(leader.stdout)
    try:
        [found] = processes_with_env("CG_DATA_DIR", data_dir)
        assert found == f"{orphan} sleep 60"
        assert data_dir not in found  # what `pgrep -af <data dir>` looked for
        pgrep = subprocess.run(["pgrep", "-af", data_dir], capture_output=True, text=True)
        assert str(orphan) not in pgrep.stdout.split()
    finally:
        os.kill(orphan, signal.SIGKILL)
    assert gone(orphan)
    assert processes_with_env("CG_DATA_DIR", data_dir) == []


def test_other_values_and_other_variables_do_not_match(tmp_path: Path):
    env = {**os.environ, "CG_DATA_DIR": str(tmp_path / "data-2"), "OTHER": str(tmp_path / "data")}
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env) as proc:
        try:
            assert processes_with_env("CG_DATA_DIR", str(tmp_path / "data")) == []
            assert [
                line.split()[0]
                for line in processes_with_env("CG_DATA_DIR", str(tmp_path / "data-2"))
            ] == [str(proc.pid)]
        finally:
            proc.kill()
