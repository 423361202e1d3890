"""A pytest plugin: a real, throwaway PostgreSQL server for the tests of the shared state.

The server is Debian's `postgresql` package (`.ci/run` installs it where it is missing),
started once per test session in a temporary directory on a free loopback port, with trust
authentication, and stopped at the end. `initdb` refuses to run as root, so as root the server
runs as the `postgres` user. Without the binaries, the tests that need it are skipped with the
reason; CI always has them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SERVER_USER = "postgres"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def running_postgres(fsync: bool = False) -> Iterator[str]:
    """A throwaway server for as long as the context lasts; yields its DSN
    (postgresql://user@127.0.0.1:port/postgres). Tests run it with fsync off; a benchmark of
    write costs keeps fsync on, as a production server would."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="cg-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, SERVER_USER)
    user = SERVER_USER if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    port = _free_port()
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
    )
    subprocess.run(
        _as_server_user(
            [
                *(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options),
                *("-w", "-t", "60", "-l", str(root / "server.log"), "start"),
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The DSN of a server shared by the session's tests."""
    if _bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with running_postgres() as dsn:
        yield dsn


@contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A new database on the server of `server_dsn` for as long as the context lasts."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield server_dsn.rsplit("/", 1)[0] + f"/{name}"
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh database of its own for one test, dropped afterwards."""
    with fresh_database(postgres_server) as dsn:
        yield dsn
