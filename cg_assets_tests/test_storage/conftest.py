"""The lake under test: the same tests run against a local directory and an S3 store."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cg_assets.storage import Lake


@pytest.fixture(params=["local", "s3"])
def lake_url(request: pytest.FixtureRequest) -> str | None:
    """None (the data dir, as on one machine) or an s3:// URL on the moto server."""
    return None if request.param == "local" else request.getfixturevalue("s3_lake_url")


@pytest.fixture
def lake(tmp_path: Path, lake_url: str | None) -> Lake:
    return Lake(tmp_path, lake_url)


def names_beside(lake: Lake, path: str) -> list[str]:
    """The names of the files in `path`'s directory: what a writer left behind."""
    selector = pafs.FileSelector(path.rpartition("/")[0], allow_not_found=True)
    return sorted(i.base_name for i in lake.fs.get_file_info(selector))
