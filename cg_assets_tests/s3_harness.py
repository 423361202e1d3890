"""A pytest plugin: a real S3-compatible server (moto's server mode) for the object-store lake.

`moto[server]` comes with the test extra, so `.ci/run` has it wherever it runs the tests.
The server is a separate process on a free loopback port, reached over HTTP by
`pyarrow.fs.S3FileSystem` exactly as a production store is; only the endpoint
(`CG_S3_ENDPOINT`) and throwaway credentials differ. It keeps its objects in memory, so a
stopped and restarted server is an empty store again (the outage tests recreate the bucket).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cg_assets_tests.postgres_harness import _free_port

READY_TIMEOUT_S = 60.0
_REQUEST = re.compile(r'"([A-Z]+ \S+ HTTP/[\d.]+)"')


class MotoServer:
    """One moto server process on a fixed port, which can be stopped and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # The server's access log: one line per request, for tests that count uploads.
        self.log_path = Path(tempfile.mkdtemp(prefix="cg-moto-")) / "access.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the server (moto accepts any credentials)."""
        return {
            "CG_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "cg-test-key",
            "AWS_SECRET_ACCESS_KEY": "cg-test-secret",
            "AWS_REGION": "us-east-1",
            # No instance-metadata lookups: there is no cloud here.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on {self.endpoint}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def remove_log(self) -> None:
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def requests_for(self, key: str) -> list[str]:
        """The request lines ("PUT /bucket/key HTTP/1.1") the server logged for an object."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [m.group(1) for line in lines if (m := _REQUEST.search(line)) and key in m.group(1)]

    def create_bucket(self, bucket: str) -> None:
        fs = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            region="us-east-1",
            access_key="cg-test-key",
            secret_key="cg-test-secret",
            allow_bucket_creation=True,
        )
        fs.create_dir(bucket)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """A running moto server for the whole session."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.remove_log()


@pytest.fixture
def s3_lake_url(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://<fresh bucket>/lake-root` with this process's environment pointing at the server."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"cg-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return f"s3://{bucket}/lake-root"
