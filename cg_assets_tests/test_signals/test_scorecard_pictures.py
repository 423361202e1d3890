"""The scorecard's pictures draw whatever the table holds, an empty corner included."""

from __future__ import annotations

import io

from PIL import Image

from cg_assets.signals.backtest import SweepPoint
from cg_assets.signals.rules import Thresholds
from cg_assets.signals.scorecard import SWEEPS, SweepResult
from cg_assets.signals.scorecard_pictures import MAX_ROWS, forest_png, sweep_png


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_a_rule_that_never_fired_in_the_sweep_still_draws():
    # oi_change never crossed any threshold (n = 0 everywhere): nothing to put on a log axis.
    t = Thresholds()
    results = [
        SweepResult(s, "BTC", s.floor(t), [SweepPoint(s.floor(t) * m, n, 0.5, 0.1) for m in (1, 2)])
        for s, n in ((SWEEPS[0], 40), (SWEEPS[1], 0))
    ]
    width, height = size(sweep_png(results))
    assert width > 300
    assert height > 200


def test_the_forest_plot_keeps_the_strongest_cells_when_there_are_many():
    rows = [
        {
            "rule": f"rule{i}",
            "level": "HIGH",
            "symbol": "BTC",
            "side": "up",
            "horizon": h,
            "n": 50,
            "effect_pct": 0.1 * i,
            "ci_low_pct": 0.1 * i - 0.2,
            "ci_high_pct": 0.1 * i + 0.2,
            "p_value": 0.5 / (i + 1),
            "q_value": min(1.0, 1.0 / (i + 1)),
        }
        for i in range(MAX_ROWS + 20)
        for h in ("1h", "4h")
    ]
    few = size(forest_png(rows[: 2 * 5]))
    many = size(forest_png(rows))
    assert many[1] > few[1]  # taller with more rows...
    assert many[1] < few[1] * (MAX_ROWS + 20) / 5  # ...but capped at MAX_ROWS of them
