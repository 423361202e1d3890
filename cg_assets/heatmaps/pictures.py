"""Heatmap pictures: price up, time across, colour for the value, the price path on top.

Each materialization stores its picture twice: inline in Markdown metadata (a base64 data URI,
which Dagster's UI renders) and as a file next to the partition's Parquet. The event log keeps
every inline copy forever, so pictures are rasterised onto a fixed pixel grid and kept under
`MAX_PNG_BYTES`, whatever the number of cells, and saved with a 256-colour palette.

matplotlib (and Pillow, which comes with it) is imported inside the drawing functions only:
importing the code location must stay fast, and most processes that import this module
(sensors, the UI's code server) never draw.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

MAX_PNG_BYTES = 200_000
WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 2.6
DPI = 85
_MIN_DPI = 40
_DENSE_PANELS = 4.5  # dense panels that fit MAX_PNG_BYTES at DPI
_MAX_COLUMNS = 600
_ROWS = 200
_MS_PER_DAY = 86_400_000.0  # matplotlib's date unit is days since 1970-01-01


@dataclass(frozen=True)
class Panel:
    """One coin's heatmap: cells as (start time, price band, value) plus the price path."""

    title: str
    x_ms: np.ndarray  # start of each cell's time span
    width_ms: int  # time span of one cell
    y_low: np.ndarray
    y_high: np.ndarray
    value: np.ndarray
    path_ms: np.ndarray
    path_price: np.ndarray
    current_price: float | None


def picture_dpi(panels: int) -> int:
    """Resolution for `panels` panels: a dense panel takes up to 40 KB at DPI, so more panels
    are drawn smaller to fit MAX_PNG_BYTES at the first attempt."""
    return max(_MIN_DPI, min(DPI, int(DPI * math.sqrt(_DENSE_PANELS / max(panels, 1)))))


def picture_size(panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a picture of `panels` panels (unless it had to shrink)."""
    dpi = picture_dpi(panels)
    return int(WIDTH_IN * dpi), int(_height_in(panels) * dpi)


def _height_in(panels: int) -> float:
    return PANEL_HEIGHT_IN * max(panels, 1) + 0.5


def rasterize(
    panel: Panel, additive: bool = True, columns: int = _MAX_COLUMNS, rows: int = _ROWS
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The panel's cells on a rows x columns grid, and its (x0, x1, y0, y1) extent.

    A cell gives its value to every pixel row its price band touches (at least one), so narrow
    bands stay visible and wide ones are not diluted. Cells meeting in one pixel add up when
    the value is `additive` (USD) and keep the largest otherwise (a score).
    """
    x0 = float(panel.x_ms.min())
    x1 = float(panel.x_ms.max()) + panel.width_ms
    lows = np.concatenate([panel.y_low, panel.path_price])
    highs = np.concatenate([panel.y_high, panel.path_price])
    if panel.current_price is not None:
        lows = np.append(lows, panel.current_price)
        highs = np.append(highs, panel.current_price)
    y0, y1 = float(lows.min()), float(highs.max())
    pad = (y1 - y0) * 0.03 or abs(y1) * 0.001 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    columns = max(1, min(columns, round((x1 - x0) / panel.width_ms)))
    col = np.clip(((panel.x_ms - x0) / (x1 - x0) * columns).astype(np.int64), 0, columns - 1)
    scale = rows / (y1 - y0)
    first = np.clip(np.floor((panel.y_low - y0) * scale).astype(np.int64), 0, rows - 1)
    last = np.clip(np.ceil((panel.y_high - y0) * scale).astype(np.int64) - 1, first, rows - 1)
    span = last - first + 1
    cell = np.repeat(np.arange(len(col)), span)
    row = first[cell] + (np.arange(len(cell)) - np.repeat(np.cumsum(span) - span, span))
    grid = np.zeros((rows, columns))
    combine = np.add if additive else np.maximum
    combine.at(grid, (row, col[cell]), panel.value[cell])
    return grid, (x0, x1, y0, y1)


def render_png(panels: Sequence[Panel], value_label: str, score: bool = False) -> bytes:
    """The panels stacked in one PNG of at most MAX_PNG_BYTES (lower resolution if need be).

    Values are USD on a log scale, or with `score` a 0..1 score on a linear one.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    dpi = picture_dpi(len(panels))
    while True:
        height = _height_in(len(panels))
        fig = Figure(figsize=(WIDTH_IN, height), dpi=dpi)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(
            left=0.08, right=0.98, top=1 - 0.3 / height, bottom=0.45 / height, hspace=0.55
        )
        axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
        for ax, panel in zip(axes, panels, strict=False):
            grid, (x0, x1, y0, y1) = rasterize(panel, additive=not score)
            peak = float(grid.max())
            if score or peak <= 0:
                norm: Normalize = Normalize(vmin=0.0, vmax=1.0 if score else peak or 1.0)
            else:
                norm = LogNorm(vmin=max(peak * 1e-4, grid[grid > 0].min()), vmax=peak)
            image = ax.imshow(
                np.ma.masked_less_equal(grid, 0.0),
                origin="lower",
                extent=(x0 / _MS_PER_DAY, x1 / _MS_PER_DAY, y0, y1),
                aspect="auto",
                interpolation="nearest",
                cmap="inferno",
                norm=norm,
            )
            ax.set_facecolor("#10131a")
            if len(panel.path_ms):
                ax.step(
                    panel.path_ms / _MS_PER_DAY,
                    panel.path_price,
                    where="post",
                    color="#4fd1ff",
                    linewidth=1.0,
                    label="price",
                )
            if panel.current_price is not None:
                ax.axhline(panel.current_price, color="#7CFC00", linestyle="--", linewidth=0.9)
                ax.annotate(
                    f"now {panel.current_price:,.6g}",
                    xy=(1.0, panel.current_price),
                    xycoords=("axes fraction", "data"),
                    xytext=(-4, 3),
                    textcoords="offset points",
                    ha="right",
                    fontsize=7,
                    color="#7CFC00",
                    bbox={"facecolor": "#10131a", "alpha": 0.8, "edgecolor": "none", "pad": 1},
                )
            locator = AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
            ax.set_xlim(x0 / _MS_PER_DAY, x1 / _MS_PER_DAY)
            ax.set_ylim(y0, y1)
            ax.set_title(panel.title, fontsize=9, loc="left")
            ax.tick_params(labelsize=7)
            ax.set_ylabel("price", fontsize=7)
            bar = fig.colorbar(image, ax=ax, pad=0.01)
            bar.set_label(value_label, fontsize=7)
            bar.ax.tick_params(labelsize=6)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        png = _palette(buffer.getvalue())
        if len(png) <= MAX_PNG_BYTES or dpi <= _MIN_DPI:
            return png
        dpi = max(_MIN_DPI, int(dpi * 0.8))


def _palette(png: bytes) -> bytes:
    """`png` with at most 256 colours: a colour map needs no more, and an indexed PNG of a
    dense heatmap is a third of the size of a true-colour one."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown showing `png` inline, as Dagster renders `MetadataValue.md`."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def utc_label(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
