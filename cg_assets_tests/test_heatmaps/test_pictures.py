"""Pictures decode, have the documented size, are not blank and stay small."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from cg_assets.heatmaps.pictures import (
    MAX_PNG_BYTES,
    Panel,
    markdown_image,
    picture_size,
    rasterize,
    render_png,
)

MINUTE = 60_000
T0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC


def panel(cells: int, seed: int = 0, title: str = "BTC") -> Panel:
    rng = np.random.default_rng(seed)
    minutes = rng.integers(0, 1440, cells)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, 1440)))
    bucket = rng.integers(-8, 8, cells)
    low = price[minutes] * (1 + bucket * 0.0025)
    return Panel(
        title=title,
        x_ms=T0 + minutes * MINUTE,
        width_ms=MINUTE,
        y_low=low,
        y_high=low + price[minutes] * 0.0025,
        value=rng.lognormal(8, 1.5, cells),
        path_ms=T0 + np.arange(1440) * MINUTE,
        path_price=price,
        current_price=float(price[-1]),
    )


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_png_decodes_with_the_documented_size_and_is_not_blank():
    png = render_png([panel(3000), panel(2000, seed=1, title="ETH")], "USD liquidated")
    image = decode(png)
    assert image.format == "PNG"
    assert image.size == picture_size(2)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # a colour scale, not a flat image
    # The inferno scale's bright end (yellow-orange) appears where money was liquidated.
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] > 100) & (pixels[:, 2] < 120)).sum() > 20
    assert len(png) <= MAX_PNG_BYTES


def test_a_huge_heatmap_still_fits_the_budget():
    png = render_png([panel(60_000, seed=s, title=str(s)) for s in range(3)], "USD")
    assert len(png) <= MAX_PNG_BYTES
    assert decode(png).size[0] > 0


def test_rasterize_sums_money_and_keeps_the_peak_score():
    cells = Panel(
        "x",
        x_ms=np.array([T0, T0]),
        width_ms=MINUTE,
        y_low=np.array([100.0, 100.0]),
        y_high=np.array([101.0, 101.0]),
        value=np.array([2.0, 3.0]),
        path_ms=np.array([T0]),
        path_price=np.array([100.5]),
        current_price=100.5,
    )
    summed, (x0, x1, y0, y1) = rasterize(cells, additive=True, rows=100)
    peak, _ = rasterize(cells, additive=False, rows=100)
    assert summed.max() == 5.0
    assert peak.max() == 3.0
    assert (x0, x1) == (T0, T0 + MINUTE)
    assert y0 < 100.0 < 101.0 < y1
    assert summed.shape == (100, 1)


def test_markdown_embeds_the_png_as_a_data_uri():
    png = render_png([panel(200)], "USD")
    text = markdown_image(png, "liquidation_heatmap 2026-03-02")
    prefix = "![liquidation_heatmap 2026-03-02](data:image/png;base64,"
    assert text.startswith(prefix)
    assert text.endswith(")")
    assert base64.b64decode(text[len(prefix) : -1]) == png


@pytest.mark.parametrize("score", [True, False])
def test_constant_values_render(score: bool):
    flat = panel(100)
    flat = Panel(**{**flat.__dict__, "value": np.ones(100)})
    assert decode(render_png([flat], "v", score=score)).size == picture_size(1)
