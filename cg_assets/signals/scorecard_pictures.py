"""The scorecard's pictures: a forest plot of every tested cell and the threshold sweep.

Like the heatmap pictures they are stored beside the day's Parquet and shown inline in the
UI's metadata, so they stay small (a bounded number of rows, a modest resolution).
matplotlib is imported inside the functions: loading the code location must not import it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cg_assets.signals.scorecard import SweepResult

MAX_ROWS = 40  # cells shown in the forest plot: those with the smallest q-values
SWEEP_MIN_N = 10  # a hit rate of fewer events is not drawn: it would be noise
DPI = 80
SIGNIFICANT = 0.05


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['rule']} {row['level']} {row['symbol']} ({row['side']})"


def _with_n(label: str, rows: Sequence[Mapping[str, Any]]) -> str:
    n = max((r["n"] for r in rows if _label(r) == label), default=0)
    return f"{label} n={n}"


def forest_png(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Effect (mean signed return minus baseline) with its 95 % interval, one row per rule,
    level, coin and side, one panel per horizon; filled where q < 0.05."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tested = [r for r in rows if r.get("p_value") is not None]
    horizons = list(dict.fromkeys(r["horizon"] for r in tested))
    best: dict[str, float] = {}
    for r in tested:
        best[_label(r)] = min(best.get(_label(r), 1.0), r["q_value"])
    labels = sorted(best, key=lambda k: (best[k], k))[:MAX_ROWS]
    labels.sort()
    y = {label: i for i, label in enumerate(reversed(labels))}
    height = 1.2 + 0.22 * max(len(labels), 1)
    fig = Figure(figsize=(3.2 * max(len(horizons), 1) + 2.6, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(horizons), 1), sharey=True, squeeze=False)[0]
    for ax, horizon in zip(axes, horizons, strict=False):
        for r in tested:
            label = _label(r)
            if r["horizon"] != horizon or label not in y:
                continue
            found = r["q_value"] < SIGNIFICANT
            colour = "#c0392b" if found and r["effect_pct"] > 0 else "#2c7fb8"
            colour = colour if found else "#7f8c8d"
            ax.errorbar(
                r["effect_pct"],
                y[label],
                xerr=[[r["effect_pct"] - r["ci_low_pct"]], [r["ci_high_pct"] - r["effect_pct"]]],
                fmt="o",
                color=colour,
                markerfacecolor=colour if found else "white",
                markersize=4,
                capsize=2,
                linewidth=1,
            )
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{horizon} after entry", fontsize=9)
        ax.set_xlabel("effect vs baseline, % (95 % CI)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y.values()), [_with_n(label, tested) for label in y])
    axes[0].set_ylim(-1, max(len(labels), 1))
    fig.suptitle(
        "Signal scorecard: filled = q < 0.05 (Benjamini-Hochberg), right of 0 = as predicted",
        fontsize=9,
    )
    fig.tight_layout()
    return _png(fig)


def sweep_png(results: Sequence[SweepResult]) -> bytes:
    """Per numeric rule, hit rate and n against the threshold (as a multiple of the fixed
    floor, 1 = today's HIGH threshold), one line per coin; hit rates of fewer than
    SWEEP_MIN_N events and counts of zero are left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rules = list(dict.fromkeys(r.sweep.rule for r in results))
    fig = Figure(figsize=(8.0, 1.7 * max(len(rules), 1) + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(rules), 1), 2, squeeze=False, sharex=True)
    for (hit_ax, n_ax), rule in zip(axes, rules, strict=False):
        for result in (r for r in results if r.sweep.rule == rule):
            floor = result.floor
            x = [p.threshold / floor for p in result.points]
            hit = [p.hit_rate * 100 if p.n >= SWEEP_MIN_N else math.nan for p in result.points]
            hit_ax.plot(x, hit, marker="o", markersize=3, label=result.symbol)
            n_ax.plot(x, [p.n or math.nan for p in result.points], marker="o", markersize=3)
        hit_ax.axhline(50, color="black", linewidth=0.6)
        hit_ax.set_ylim(0, 100)
        hit_ax.axvline(1.0, color="grey", linewidth=0.6, linestyle="--")
        n_ax.axvline(1.0, color="grey", linewidth=0.6, linestyle="--")
        if any(p.n for r in results if r.sweep.rule == rule for p in r.points):
            n_ax.set_yscale("log")  # a rule that never fired has nothing to put on a log axis
        hit_ax.set_ylabel(f"{rule}\nhit %", fontsize=7)
        n_ax.set_ylabel("n", fontsize=7)
        for ax in (hit_ax, n_ax):
            ax.tick_params(labelsize=6)
        hit_ax.legend(fontsize=6, loc="best")
    axes[-1][0].set_xlabel("threshold / fixed HIGH threshold", fontsize=7)
    axes[-1][1].set_xlabel("threshold / fixed HIGH threshold", fontsize=7)
    fig.suptitle("Threshold sweep: hit rate and n at the 4 h horizon", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
