"""Each day's heatmap picture beside its Parquet file, and the newest one inline in the UI.

The picture is a companion file of the day (`Lake.write_bytes`), so it is replaced with the day
and found where the day is; the run's metadata shows the newest day's picture as Markdown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa

from cg_assets.heatmaps.pictures import markdown_image
from cg_assets.resources import LakeResource
from cg_assets.tables import split_days

PICTURE = "heatmap.png"


def publish_pictures(
    lake: LakeResource,
    asset: str,
    table: pa.Table,
    days: Sequence[date],
    draw: Callable[[pa.Table], bytes],
) -> dict[str, Any]:
    """Draw and store a picture for each day of `table` with rows; metadata for the newest."""
    newest: tuple[date, bytes, str] | None = None
    for day, part in split_days(table, days).items():
        if part.num_rows:
            png = draw(part)
            newest = (day, png, lake.lake.write_bytes(asset, day, PICTURE, png))
    if newest is None:
        return {}
    day, png, file = newest
    return picture_metadata(png, f"{asset} {day}", file)


def picture_metadata(png: bytes, alt: str, file: str) -> dict[str, Any]:
    return {
        "heatmap": dg.MetadataValue.md(markdown_image(png, alt)),
        "picture_path": dg.MetadataValue.path(file),
        "picture_bytes": len(png),
    }
