"""The event-study maths behind the signal scorecard: plain numpy, no Dagster, no DuckDB.

A backtest on leaked data is worthless, so the alignment is the first thing here: a signal
found on the bar starting at T is known once that bar closed, so its outcome starts at the
first price tradable after it, the open of the bar starting at T + interval, and ends at the
close of the bar ending `horizon` later. Nothing at or before T's close is used.

Returns are scored against the rule's own hypothesis (`rules.HYPOTHESES`): signed by the side it
predicts, or, for context rules (side NONE), by the size of the move. Events are counted as a
user received them (the alert ledger's hold-back rules, `delivered`). Forward windows of nearby
events overlap, so confidence intervals come from a block bootstrap whose blocks are the
episodes of overlapping windows (studentized, so it holds its level with few, unequal blocks:
measured on independent data, 4.5 % of p-values below 0.05), and the p-values of the whole table
are corrected together (Benjamini-Hochberg), because a table of a hundred cells finds five
"effects" at p < 0.05 by chance alone.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cg_assets.coinglass.plans import HOUR_MS
from cg_assets.telegram.ledger import Policy, Prior, SignalRef, hold_back

HORIZONS: dict[str, int] = {"1h": HOUR_MS, "4h": 4 * HOUR_MS, "24h": 24 * HOUR_MS}
# Fewer received events, or fewer independent episodes of them, and a cell gets no interval,
# p-value or quote: a bootstrap of a handful of overlapping returns says nothing.
MIN_EVENTS = 20
MIN_EPISODES = 15
DONE, PENDING, MISSING = "done", "pending", "missing"
BOOTSTRAP_DRAWS = 999
# Below this many resamples as extreme as the sample, the resamples cannot resolve the p-value
# (their floor is 1 / (draws + 1), which Benjamini-Hochberg multiplies by the table's size):
# it comes from the normal tail of the studentized mean instead.
TAIL_RESAMPLES = 10
RANDOM_DRAWS = 500
CONFIDENCE = 0.95
# Resampled values held in memory at once (draws x events), so a cell of many thousand
# events is bootstrapped in slices instead of one large array.
_CHUNK_VALUES = 4_000_000


@dataclass(frozen=True)
class PriceBars:
    """One coin's price bars, sorted by start; gaps allowed (they make outcomes `missing`)."""

    ts_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    interval_ms: int

    def __post_init__(self) -> None:
        if len(self.ts_ms) and np.any(np.diff(self.ts_ms) <= 0):
            raise ValueError("ts_ms: bar starts must be strictly increasing")


@dataclass(frozen=True)
class Forward:
    """Per event, its outcome over one horizon; prices and percentages are NaN unless done."""

    status: np.ndarray  # DONE, PENDING (the exit bar has not been stored yet) or MISSING
    entry_ts_ms: np.ndarray
    exit_ts_ms: np.ndarray  # the close of the last bar of the window
    entry_price: np.ndarray
    exit_price: np.ndarray
    ret_pct: np.ndarray
    low_pct: np.ndarray  # lowest low of the window relative to the entry (<= 0)
    high_pct: np.ndarray  # highest high of the window relative to the entry (>= 0)


def forward_returns(bars: PriceBars, event_ts_ms: np.ndarray, horizon_ms: int) -> Forward:
    """Outcomes of events found on the bars starting at `event_ts_ms`, `horizon_ms` after the
    first tradable price (the next bar's open).

    Pending, not zero, when the bars up to the exit are not stored yet; missing when a bar of
    the window is absent although later bars exist (a gap in the data).
    """
    step = bars.interval_ms
    if horizon_ms <= 0 or horizon_ms % step:
        raise ValueError(f"horizon_ms={horizon_ms}: must be a positive multiple of {step}")
    events = np.asarray(event_ts_ms, dtype=np.int64)
    k = horizon_ms // step
    entry_ts = events + step
    last_bar_ts = entry_ts + horizon_ms - step
    n, ts = len(events), bars.ts_ms
    nan = np.full(n, np.nan)
    entry_price, exit_price, low_pct, high_pct = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    status = np.full(n, MISSING, dtype=object)
    if len(ts) == 0:
        status[:] = PENDING
        return Forward(status, entry_ts, entry_ts + horizon_ms, *[nan] * 5)
    first = np.searchsorted(ts, entry_ts)
    last = np.searchsorted(ts, last_bar_ts)
    found = (first < len(ts)) & (last < len(ts))
    found[found] &= (ts[first[found]] == entry_ts[found]) & (ts[last[found]] == last_bar_ts[found])
    done = found & (last - first == k - 1)
    status[done] = DONE
    status[~done & (last_bar_ts > ts[-1])] = PENDING
    if done.any():
        lows = np.lib.stride_tricks.sliding_window_view(bars.low, k).min(axis=1)
        highs = np.lib.stride_tricks.sliding_window_view(bars.high, k).max(axis=1)
        i, j = first[done], last[done]
        entry_price[done] = bars.open[i]
        exit_price[done] = bars.close[j]
        low_pct[done] = (np.minimum(lows[i], bars.open[i]) / bars.open[i] - 1) * 100
        high_pct[done] = (np.maximum(highs[i], bars.open[i]) / bars.open[i] - 1) * 100
    ret_pct = (exit_price / entry_price - 1) * 100
    return Forward(
        status, entry_ts, entry_ts + horizon_ms, entry_price, exit_price, ret_pct, low_pct, high_pct
    )


def signed_returns(ret_pct: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Returns as the hypothesis scores them: times the predicted side (+1 up, -1 down), or the
    size of the move for context rules (side 0)."""
    side = np.asarray(side)
    return np.where(side == 0, np.abs(ret_pct), side * ret_pct)


def adverse_excursion(low_pct: np.ndarray, high_pct: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The worst move against the prediction within the window (<= 0, percent): the low for an
    up call, the high for a down call, the larger of both for a context rule."""
    side = np.asarray(side)
    against = np.where(side > 0, low_pct, -high_pct)
    return np.where(side == 0, -np.maximum(-low_pct, high_pct), against)


def delivered(
    ts_s: Sequence[float],
    coins: Sequence[str],
    rules: Sequence[str],
    levels: Sequence[str],
    policy: Policy,
) -> np.ndarray:
    """Which signals a user received under the alert ledger's hold-back rules (dedup and
    per-level cooldowns per coin and rule), judged in time order with the ledger's own
    `hold_back`. Only received alerts hold later ones back: a held-back one is never sent."""
    keep = np.zeros(len(ts_s), dtype=bool)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(coins, rules, strict=True)):
        groups[key].append(i)
    for (_, rule), members in groups.items():
        recent: deque[Prior] = deque()
        for i in sorted(members, key=lambda m: ts_s[m]):
            now = float(ts_s[i])
            while recent and recent[0].at < now - policy.horizon_s:
                recent.popleft()
            if not hold_back(SignalRef(rule, levels[i]), list(recent), now, policy):
                keep[i] = True
                recent.append(Prior(levels[i], now))
    return keep


def episodes(ts_ms: np.ndarray, horizon_ms: int) -> np.ndarray:
    """Episode number of each event (sorted by time): events whose forward windows overlap
    (less than `horizon_ms` apart) share returns and form one episode; a new episode starts
    where the windows stop overlapping. Episodes are the bootstrap's blocks."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(ts) and np.any(np.diff(ts) < 0):
        raise ValueError("ts_ms: events must be sorted by time")
    return np.concatenate([[0], np.cumsum(np.diff(ts) >= horizon_ms)]).astype(np.int64)[: len(ts)]


@dataclass(frozen=True)
class Resamples:
    """Block-bootstrap resamples of a mean: each resample's mean and standard error."""

    means: np.ndarray
    ses: np.ndarray


def _mean_se(totals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the pooled events of k blocks and its block-robust standard error, from the
    totals over the blocks of (S, N, S^2, S*N, N^2) (S: a block's sum, N: its events) in the
    last axis: var = k/(k-1) * sum_c (S_c - mean N_c)^2 / (sum N)^2, expanded."""
    sums, counts, squares, cross, n2 = np.moveaxis(totals, -1, 0)
    mean = sums / counts
    spread = squares - 2 * mean * cross + mean**2 * n2
    return mean, np.sqrt(np.maximum(spread, 0.0) * k / (k - 1)) / counts


def block_bootstrap(
    x: np.ndarray, blocks: np.ndarray, draws: int, rng: np.random.Generator
) -> tuple[float, float, Resamples]:
    """The mean of `x` and its standard error, and `draws` resamples: the k blocks (`blocks`,
    ids 0..k-1 in order) drawn k times with replacement, each whole, so the correlation
    inside a block is kept and blocks of overlapping windows are never split. A resample is
    summed from the per-block totals it draws."""
    x = np.asarray(x, dtype=np.float64)
    blocks = np.asarray(blocks, dtype=np.int64)
    if len(x) == 0 or len(blocks) != len(x):
        raise ValueError(
            f"x and blocks must be non-empty and of one length: {len(x)}, {len(blocks)}"
        )
    k = int(blocks[-1]) + 1
    if k < 2:
        raise ValueError("blocks: a bootstrap needs at least two blocks")
    sums = np.bincount(blocks, weights=x, minlength=k)
    counts = np.bincount(blocks, minlength=k).astype(np.float64)
    per_block = np.stack([sums, counts, sums**2, sums * counts, counts**2], axis=1)
    mean, se = _mean_se(per_block.sum(axis=0), k)
    means, ses = np.empty(draws), np.empty(draws)
    per_chunk = max(1, _CHUNK_VALUES // k)
    for lo in range(0, draws, per_chunk):
        hi = min(draws, lo + per_chunk)
        idx = rng.integers(0, k, size=(hi - lo, k))
        totals = np.stack([per_block[:, j][idx].sum(axis=1) for j in range(5)], axis=1)
        means[lo:hi], ses[lo:hi] = _mean_se(totals, k)
    return float(mean), float(se), Resamples(means, ses)


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval and two-sided p-value against zero."""

    mean: float
    low: float
    high: float
    p: float


def bootstrap_mean(
    x: np.ndarray,
    blocks: np.ndarray,
    rng: np.random.Generator,
    draws: int = BOOTSTRAP_DRAWS,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """The studentized block bootstrap (bootstrap-t) of the mean: the interval and the p-value
    of "mean = 0" from the resamples' t = (mean* - mean) / se* (in the far tail, see
    TAIL_RESAMPLES, from the normal distribution). Studentizing makes both hold
    their level with few, unequal, heavy-tailed blocks (a calm market's volatility bursts),
    where percentiles of the resampled means are too narrow (Hall 1992)."""
    mean, se, r = block_bootstrap(x, blocks, draws, rng)
    if se == 0:
        return Estimate(mean, mean, mean, 1.0 if mean == 0 else 0.0)
    ok = r.ses > 0
    t = (r.means[ok] - mean) / r.ses[ok]
    tail = (1 - confidence) / 2
    t_low, t_high = np.quantile(t, [tail, 1 - tail])
    extreme = int(np.sum(np.abs(t) >= abs(mean / se)))
    if extreme < TAIL_RESAMPLES:
        p = math.erfc(abs(mean / se) / math.sqrt(2))
    else:
        p = (1 + extreme) / (len(t) + 1)
    return Estimate(mean, mean - t_high * se, mean - t_low * se, float(p))


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over the finite entries of `p`; NaN
    stays NaN (a cell without a test is not counted in the family)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m == 0:
        return q
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


@dataclass(frozen=True)
class Baseline:
    """A coin's outcomes over every bar at one horizon: what a signal has to beat."""

    mean_ret_pct: float
    share_up: float
    share_down: float
    mean_abs_pct: float
    median_abs_pct: float  # the cut a context rule's move must exceed to count as a hit
    share_big: float  # share of bars moving more than the median (about one half)

    def mean_for(self, side: int) -> float:
        return self.mean_abs_pct if side == 0 else side * self.mean_ret_pct

    def hit_rate_for(self, side: int) -> float:
        return {1: self.share_up, -1: self.share_down}.get(side, self.share_big)


def hits(signed_pct: np.ndarray, side: np.ndarray, median_abs_pct: float) -> np.ndarray:
    """Whether each outcome went the predicted way (a context rule: moved more than usual)."""
    return np.where(np.asarray(side) == 0, signed_pct > median_abs_pct, signed_pct > 0)


@dataclass(frozen=True)
class RandomTimes:
    """The same predictions placed at random bars of the coin, `draws` times."""

    mean_pct: float
    hit_rate: float
    p: float  # share of draws whose mean signed return reached the observed one


def random_times(
    pool_ret_pct: np.ndarray,
    side: int,
    n: int,
    observed_mean_pct: float,
    median_abs_pct: float,
    rng: np.random.Generator,
    draws: int = RANDOM_DRAWS,
) -> RandomTimes:
    """A random-time baseline: `n` bars drawn from the coin's outcomes at this horizon,
    scored like the signal; what timing by chance would have shown."""
    idx = rng.integers(0, len(pool_ret_pct), size=(draws, n))
    signed = signed_returns(pool_ret_pct[idx], np.full((draws, n), side))
    means = signed.mean(axis=1)
    hit = hits(signed, np.full((draws, n), side), median_abs_pct).mean()
    reached = float((1 + np.sum(means >= observed_mean_pct)) / (draws + 1))
    return RandomTimes(float(means.mean()), float(hit), reached)


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    n: int
    hit_rate: float
    mean_pct: float


def threshold_sweep(
    value: np.ndarray,
    side: np.ndarray,
    ret_pct: np.ndarray,
    median_abs_pct: float,
    grid: Sequence[float],
) -> list[SweepPoint]:
    """n and hit rate of "fire when value > threshold" for each threshold of `grid`, over bars
    with a finished outcome (every bar above the threshold, before cooldowns)."""
    ok = np.isfinite(value) & np.isfinite(ret_pct)
    value, side, ret = value[ok], np.asarray(side)[ok], ret_pct[ok]
    signed = signed_returns(ret, side)
    hit = hits(signed, side, median_abs_pct)
    points = []
    for threshold in grid:
        above = value > threshold
        count = int(above.sum())
        points.append(
            SweepPoint(
                float(threshold),
                count,
                float(hit[above].mean()) if count else math.nan,
                float(signed[above].mean()) if count else math.nan,
            )
        )
    return points
