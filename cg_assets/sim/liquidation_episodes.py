"""A scenario's liquidation orders: what each episode puts into the liquidation feed.

Each episode's orders join the feed's random ones as the episode's minutes pass: a whale order
at the episode's start and a wave through its first minute, then a tail. They are planned per
episode from the seed, so they are the same however often the feed advances, and each wave
yields an `Injection` record once all of its orders are due, so a benchmark can measure alert
latency from the moment an order existed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cg_assets.coinglass.plans import MINUTE_MS
from cg_assets.sim.liquidation_events import USD_DECIMALS, Injection, usd_sum
from cg_assets.sim.scenarios import Episode

# An episode's orders at strength 1: the opening minute (a whale at the start, then a wave)
# crosses the heads-up thresholds (one order >= $1M, or >= $5M of one coin in a minute) on
# its own; the tail keeps the liquidations coming while the flush runs.
_OPENING_USD = 8e6
_WHALE_SHARE = (0.3, 0.4)  # of the opening minute
_OPENING_ORDERS = 8
_TAIL_USD = 6e6
_TAIL_ORDERS = 16
_TAIL_MS = 5 * MINUTE_MS


@dataclass(frozen=True)
class _Plan:
    """An episode's orders, in time order; `wave` is 0 for the opening minute, 1 for the tail."""

    episode: Episode
    time: np.ndarray
    inst: np.ndarray
    usd: np.ndarray
    wave: np.ndarray


Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class EpisodeOrders:
    """The orders of `episodes`, drawn from `seed`, on the instruments `candidates(coin, None)`
    returns (indexes into `weights`, which spreads each coin's orders by volume share).

    Not thread-safe: the feed calls it with its lock held.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        seed: int,
        candidates: Callable[[str, str | None], np.ndarray],
        weights: np.ndarray,
    ) -> None:
        self._episodes = tuple(episodes)
        self._seed = seed
        self._candidates = candidates
        self._weights = weights
        self._plans: dict[Episode, _Plan] = {}
        self._tallies: dict[tuple[Episode, int], Injection] = {}

    def _plan(self, episode: Episode) -> _Plan:
        """The episode's orders, drawn from the feed's seed and the episode alone."""
        plan = self._plans.get(episode)
        if plan is not None:
            return plan
        rng = np.random.default_rng(
            [self._seed, zlib.crc32(episode.coin.encode()), episode.start_ms // MINUTE_MS]
        )
        opening = episode.strength * _OPENING_USD
        whale = opening * rng.uniform(*_WHALE_SHARE)
        wave = rng.lognormal(0.0, 0.8, _OPENING_ORDERS - 1)
        tail = rng.lognormal(0.0, 0.8, _TAIL_ORDERS)
        usd = np.concatenate(
            [
                [whale],
                (opening - whale) * wave / wave.sum(),
                episode.strength * _TAIL_USD * tail / tail.sum(),
            ]
        )
        offsets = np.concatenate(
            [
                [0],
                np.sort(rng.integers(1, MINUTE_MS, _OPENING_ORDERS - 1)),
                MINUTE_MS + np.sort((rng.random(_TAIL_ORDERS) ** 2 * _TAIL_MS).astype(np.int64)),
            ]
        )
        candidates = self._candidates(episode.coin, None)
        p = self._weights[candidates] / self._weights[candidates].sum()
        plan = _Plan(
            episode,
            episode.start_ms + offsets.astype(np.int64),
            rng.choice(candidates, len(usd), p=p),
            np.round(usd, USD_DECIMALS),
            np.repeat([0, 1], [_OPENING_ORDERS, _TAIL_ORDERS]),
        )
        self._plans[episode] = plan
        return plan

    def due(self, start: int, now: int) -> tuple[Columns | None, list[Injection]]:
        """Episode orders timed in (start, now] as (time, inst, usd, long) columns (None when
        there are none), and the records of the waves they complete, in completion order."""
        plans = [
            self._plan(e)
            for e in self._episodes
            if e.start_ms <= now and e.start_ms + MINUTE_MS + _TAIL_MS > start
        ]
        picked = []
        completed: list[tuple[int, Injection]] = []
        for plan in plans:
            due = (plan.time > start) & (plan.time <= now)
            if not due.any():
                continue
            picked.append((plan, due))
            for wave in np.unique(plan.wave[due]).tolist():
                done = self._tally(plan, wave, due & (plan.wave == wave), now)
                if done is not None:
                    completed.append(done)
        records = [record for _, record in sorted(completed, key=lambda c: c[0])]
        if not picked:
            return None, records
        columns = (
            np.concatenate([p.time[d] for p, d in picked]),
            np.concatenate([p.inst[d] for p, d in picked]),
            np.concatenate([p.usd[d] for p, d in picked]),
            np.concatenate([np.full(d.sum(), p.episode.side == "long") for p, d in picked]),
        )
        return columns, records

    def _tally(
        self, plan: _Plan, wave: int, due: np.ndarray, now: int
    ) -> tuple[int, Injection] | None:
        """Add a wave's orders now due to its running record; once the wave is complete, its
        last order's time and record."""
        key = (plan.episode, wave)
        usd = plan.usd[due]
        sofar = self._tallies.pop(key, None)
        if sofar is None:
            record = Injection(
                int(plan.time[due][0]),
                plan.episode.coin,
                plan.episode.side,
                usd_sum(usd),
                len(usd),
                float(usd.max()),
                "opening" if wave == 0 else "tail",
            )
        else:
            record = replace(
                sofar,
                usd_total=usd_sum(np.append(usd, sofar.usd_total)),
                orders=sofar.orders + len(usd),
                largest_usd=max(sofar.largest_usd, float(usd.max())),
            )
        last = int(plan.time[plan.wave == wave][-1])
        if last <= now:
            return last, record
        self._tallies[key] = record
        return None
