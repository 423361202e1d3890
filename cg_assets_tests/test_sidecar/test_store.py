"""The storage URL (`CG_LAKE_URL`) and the object paths the spool's readers use on S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from cg_assets.settings import Settings, SettingsError
from ws_sidecar.config import Config, ConfigError
from ws_sidecar.store import ObjectPath, open_store, read_object


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gs://bucket/x", "scheme 'gs' is not supported"),
        ("s3:///prefix", "the bucket is missing"),
        ("s3://AKIAKEY:hunter2@bucket/x", "credentials in the URL are not accepted"),
        ("s3://bucket/x?versionId=1", "without ?query"),
    ],
)
def test_a_bad_lake_url_is_refused_by_both_programs_without_echoing_credentials(
    url: str, problem: str
):
    with pytest.raises(SettingsError) as settings_error:
        Settings.from_env({"CG_LAKE_URL": url})
    with pytest.raises(ConfigError) as config_error:
        Config.from_env({"CG_LAKE_URL": url, "CG_WS_URL": "ws://127.0.0.1:1/ws"})
    for message in (str(settings_error.value), str(config_error.value)):
        assert "CG_LAKE_URL=" in message
        assert problem in message
        assert "hunter2" not in message


def test_a_bad_endpoint_is_refused_without_echoing_credentials():
    env = {"CG_S3_ENDPOINT": "http://key:hunter2@127.0.0.1:9000/path"}
    with pytest.raises(SettingsError, match="CG_S3_ENDPOINT=") as raised:
        Settings.from_env(env)
    assert "hunter2" not in str(raised.value)


def test_the_default_is_the_data_dir_and_a_relative_path_is_resolved(tmp_path: Path):
    assert Settings.from_env({"CG_DATA_DIR": str(tmp_path)}).lake_url is None
    store = open_store(tmp_path)
    assert store.is_local
    assert store.path("spool") == tmp_path / "spool"
    assert Settings.from_env({"CG_LAKE_URL": "shared"}).lake_url == str(Path("shared").resolve())


def test_object_paths_behave_like_the_path_methods_the_spool_uses(s3_lake_url: str):
    spool = open_store(s3_lake_url).path("spool")
    assert isinstance(spool, ObjectPath)
    assert str(spool) == f"{s3_lake_url}/spool"
    assert list(spool.iterdir()) == []
    segment = spool / "seg-000000000001.jsonl"
    segment.write_bytes(b"line\n")
    assert segment.read_bytes() == b"line\n"
    assert segment.with_suffix(".summary.json").name == "seg-000000000001.summary.json"
    assert segment.stat().st_size == 5
    assert [p.name for p in spool.iterdir()] == ["seg-000000000001.jsonl"]
    segment.unlink()
    segment.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        segment.stat()


class _TornOnce:
    """A file system whose first read returns a replaced object cut to the old length, as an
    S3 HEAD-then-GET racing an upload does (a race no real server produces on demand)."""

    def __init__(self) -> None:
        self.reads = 0

    def open_input_stream(self, path: str) -> _Stream:
        self.reads += 1
        return _Stream(b'{"ranges": [[0' if self.reads == 1 else b'{"ranges": [[0, 9]]}')

    def get_file_info(self, path: str) -> _Info:
        return _Info(len(b'{"ranges": [[0, 9]]}'))


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self) -> bytes:
        return self.data


class _Info:
    def __init__(self, size: int) -> None:
        self.size = size


def test_a_torn_read_of_a_replaced_object_is_read_again():
    fs = _TornOnce()
    assert read_object(fs, "b/x") == b'{"ranges": [[0, 9]]}'  # type: ignore[arg-type]
    assert fs.reads == 2
