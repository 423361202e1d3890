"""Advisory locks in the state database: what serialises writers of an object-store lake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cg_assets.storage.locks import AdvisoryLock, LockTimeout, advisory_key

HOLD = """
import sys
from cg_assets.storage.locks import AdvisoryLock
lock = AdvisoryLock(sys.argv[1], "s3://b/lake/a/date=2026-03-01/.lock", 30)
lock.__enter__()
print("held", flush=True)
sys.stdin.readline()
"""


def test_keys_are_stable_and_distinct():
    assert advisory_key("s3://b/x") == advisory_key("s3://b/x")
    assert advisory_key("s3://b/x") != advisory_key("s3://b/y")
    assert -(2**63) <= advisory_key("s3://b/x") < 2**63


def test_a_held_lock_times_out_naming_the_lock_not_the_dsn(postgres_dsn: str):
    secret_dsn = postgres_dsn.replace("@", ":hunter2@", 1)  # trust auth ignores it
    name = "s3://b/lake/a/date=2026-03-01/.lock"
    with (
        AdvisoryLock(postgres_dsn, name, 5),
        pytest.raises(LockTimeout) as raised,
        AdvisoryLock(secret_dsn, name, 0.2),
    ):
        pass
    assert name in str(raised.value)
    assert "hunter2" not in str(raised.value)
    # Released by the `with`: taken again at once.
    with AdvisoryLock(postgres_dsn, name, 0.2):
        pass


def test_a_killed_holder_releases_its_lock(postgres_dsn: str):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, postgres_dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(LockTimeout),
            AdvisoryLock(postgres_dsn, "s3://b/lake/a/date=2026-03-01/.lock", 0.2),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    # The server ends the dead holder's session and with it the lock, with no expiry to wait.
    with AdvisoryLock(postgres_dsn, "s3://b/lake/a/date=2026-03-01/.lock", 10):
        pass
