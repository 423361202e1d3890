"""Story scenarios for the simulator: episodes that make every kind of alert fire in a demo.

The calm market crosses the product's signal thresholds a few times a week, too rarely for a
demo of a few minutes. An episode plays the textbook story instead: over the hour before it,
open interest builds, funding climbs, retail piles into one side while top traders take the
other; then price breaks against the crowd within minutes, a wave of forced liquidations and
one-sided taker flow follow, open interest is flushed, and everything drifts back to the calm
market over the next two hours. A cascade liquidates crowded longs; a squeeze is its mirror.

Episodes are drawn on top of the seeded minute grid rather than into its random walks: each
minute's overlay depends only on the minute and the episodes, so it is the same whichever
chunk generates it, and outside an episode's span the grid is bit-for-bit the calm one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS, MINUTE_MS
from cg_assets.sim.grid import (
    FUNDING_MEAN,
    GLOBAL_LONG_MEAN,
    TOP_ACCOUNT_LONG_MEAN,
    TOP_POSITION_LONG_MEAN,
)
from cg_assets.sim.instruments import COINS, CoinSpec

EpisodeKind = Literal["cascade", "squeeze"]
SCENARIOS = ("calm", "cascade", "squeeze", "planted")
DEFAULT_COINS = ("BTC", "ETH")

# Timing, in minutes from an episode's start.
_BUILD_MIN = 60  # crowding builds over the hour before the start
_BREAK_MIN = 5  # price breaks against the crowd within this many minutes
_FLUSH_MIN = 15  # open interest is flushed and most liquidations happen
_HOLD_MIN = 45  # positioning stays crowded this long after the start, then relaxes
_RELAX_MIN = 60
_PRICE_RECOVERY_MIN = 60  # price and OI return to the calm market's path
_OI_RECOVERY_MIN = 45
_TAKER_MIN = 45  # one-sided taker flow fades over this long
_VOLUME_MIN = 30  # the volume spike fades over this long
SPAN_MIN = max(
    _BREAK_MIN + _PRICE_RECOVERY_MIN, _FLUSH_MIN + _OI_RECOVERY_MIN, _HOLD_MIN + _RELAX_MIN
)

# Sizes at strength 1 (log changes are relative to the calm market).
_BUILD_OI = 0.11  # log OI added over a full build-up
_FLUSH_OI = 0.13  # log OI removed by the flush
_BUILD_PRICE = 0.01  # the crowd pushes price its way during a full build-up
_BREAK_PRICE = 0.05  # log price move against the crowd
_VOLUME_SPIKE = 10.0  # extra volume, in multiples of the calm market's, at the start
_LIQUIDATED_OF_OI = 0.002  # an episode liquidates this share of the coin's open interest...
_LIQUIDATED_MIN_USD = 45e6  # ...but at least this much, more than the feed's orders of it
# How much of the calm market's wiggles an episode's levels keep, so they do not look flat.
_FUNDING_TEXTURE = 0.25
_POSITIONING_TEXTURE = 0.2

# Where the first episode starts relative to the top of the anchor's hour: 20 minutes into the
# latest closed hourly bar, so the flush is over and the crowd still in place when it closes.
_FIRST_BEFORE_HOUR_MIN = 40
# How much history the "planted" scenario plants effects into before the anchor.
PLANTED_HISTORY_MS = 120 * DAY_MS


@dataclass(frozen=True)
class _Story:
    """What an episode kind pushes each series towards, at strength 1."""

    crowd: float  # +1: longs crowd and price breaks down; -1: the mirror
    funding: float  # percent per 8h at the peak of crowding
    retail_long: float  # global account long %
    top_long: float  # top-trader long %, on the other side of retail
    taker_buy: float  # taker buy share while the crowd is liquidated
    liquidated: Literal["liq_long", "liq_short"]


_STORIES: dict[EpisodeKind, _Story] = {
    "cascade": _Story(1.0, 0.16, 74.0, 44.0, 0.10, "liq_long"),
    "squeeze": _Story(-1.0, -0.11, 30.0, 58.0, 0.90, "liq_short"),
}


@dataclass(frozen=True)
class Episode:
    """One story on one coin: crowding builds over `build_ms` before `start_ms`, the crowd is
    liquidated from `start_ms` on. `strength` scales every move (1 is calibrated so hourly bars
    cross the signal rules' HIGH thresholds)."""

    start_ms: int
    coin: str
    kind: EpisodeKind
    strength: float = 1.0
    build_ms: int = _BUILD_MIN * MINUTE_MS

    def __post_init__(self) -> None:
        problems = []
        if self.start_ms % MINUTE_MS:
            problems.append(f"start_ms must be on a minute boundary, got {self.start_ms}")
        if self.coin not in COINS:
            problems.append(f"coin must be one of {', '.join(COINS)}, got {self.coin!r}")
        if self.kind not in _STORIES:
            problems.append(f"kind must be 'cascade' or 'squeeze', got {self.kind!r}")
        if not (math.isfinite(self.strength) and self.strength > 0):
            problems.append(f"strength must be a finite number > 0, got {self.strength!r}")
        if self.build_ms < 0 or self.build_ms % MINUTE_MS:
            problems.append(f"build_ms must be whole minutes >= 0, got {self.build_ms}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def side(self) -> Literal["long", "short"]:
        """The side whose positions are liquidated."""
        return "long" if self.kind == "cascade" else "short"

    @property
    def first_ms(self) -> int:
        """Start of the first minute the episode changes."""
        return self.start_ms - self.build_ms

    @property
    def end_ms(self) -> int:
        """End of the last minute the episode changes."""
        return self.start_ms + SPAN_MIN * MINUTE_MS


# A planted drift, in minutes from its start: funding crowds over the hour before, stays for
# half an hour and relaxes over the next; price drifts over 4 h, then returns to the calm path.
_DRIFT_BUILD_MIN = 60
_DRIFT_HOLD_MIN = 30
_DRIFT_RELAX_MIN = 30
_DRIFT_MIN = 240
_DRIFT_RETURN_MIN = 240


@dataclass(frozen=True)
class Drift:
    """A planted effect for backtests: funding crowded to `funding` (percent per 8 h) at
    `start_ms`, then a log price drift of `drift` over the 4 h after it, undone over the 4 h
    after that. Nothing else moves, so only the funding rule sees it."""

    start_ms: int
    coin: str
    funding: float = 0.15
    drift: float = -0.008

    def __post_init__(self) -> None:
        if self.start_ms % MINUTE_MS:
            raise ValueError(f"start_ms must be on a minute boundary, got {self.start_ms}")
        if self.coin not in COINS:
            raise ValueError(f"coin must be one of {', '.join(COINS)}, got {self.coin!r}")

    @property
    def first_ms(self) -> int:
        return self.start_ms - _DRIFT_BUILD_MIN * MINUTE_MS

    @property
    def end_ms(self) -> int:
        return self.start_ms + (_DRIFT_MIN + _DRIFT_RETURN_MIN) * MINUTE_MS


@dataclass(frozen=True)
class Scenario:
    """A named story: episodes drawn into the synthetic market (none for "calm"), and planted
    drifts (backtest scenarios only)."""

    name: str
    episodes: tuple[Episode, ...] = ()
    drifts: tuple[Drift, ...] = ()

    def between(self, start_ms: int, end_ms: int, coin: str | None = None) -> list[Episode]:
        """Episodes (of `coin`, or all) starting in [start_ms, end_ms), in start order."""
        return sorted(
            (
                e
                for e in self.episodes
                if start_ms <= e.start_ms < end_ms and coin in (None, e.coin)
            ),
            key=lambda e: e.start_ms,
        )

    def shape(
        self, spec: CoinSpec, arrays: dict[str, np.ndarray], start_ms: int
    ) -> dict[str, np.ndarray]:
        """The minutes in `arrays` (starting at `start_ms`) with the coin's episodes drawn in;
        the input is returned unchanged when no episode touches them."""
        n = len(arrays["close"])
        end_ms = start_ms + n * MINUTE_MS
        arrays = _drifted(
            [d for d in self.drifts if d.coin == spec.coin and d.first_ms < end_ms],
            arrays,
            start_ms,
        )
        touching = [
            e
            for e in self.episodes
            if e.coin == spec.coin and e.first_ms < end_ms and e.end_ms > start_ms
        ]
        if not touching:
            return arrays
        lo = max(min(e.first_ms - start_ms for e in touching) // MINUTE_MS, 0)
        hi = min(max(e.end_ms - start_ms for e in touching) // MINUTE_MS, n)
        minutes = start_ms + np.arange(lo, hi, dtype=np.int64) * MINUTE_MS
        window = {k: v[lo:hi].astype(np.float64) for k, v in arrays.items()}
        shaped = _overlay(spec, touching, minutes, window)
        out = {}
        for name, values in arrays.items():
            values = values.copy()
            values[lo:hi] = shaped[name]
            out[name] = values
        return out


def planted_effects(
    start_ms: int,
    end_ms: int,
    coins: Sequence[str] = ("BTC", "ETH", "SOL"),
    every_ms: int = 12 * HOUR_MS,
    seed: int = 0,
) -> Scenario:
    """Effects a backtest must find: on the first coin, funding crowded above 0.10 % followed
    by a -0.8 % drift over 4 h; on the second, long cascades whose price bounces back (the
    cascade story: the break is undone within the hour after the flush); further coins stay
    calm as controls. One effect every `every_ms` per coin, at a seeded jitter of up to a
    third of it, on whole hours (drifts) or 20 minutes into the hour (cascades, as the demo's).
    """
    if len(coins) < 2:
        raise ValueError(f"coins must name at least two coins, got {list(coins)}")
    rng = np.random.default_rng(seed)
    first = start_ms - start_ms % HOUR_MS + DAY_MS
    times = np.arange(first, end_ms - DAY_MS, every_ms, dtype=np.int64)
    jitter = rng.integers(0, max(every_ms // HOUR_MS // 3, 1), size=(2, len(times))) * HOUR_MS
    drifts = tuple(Drift(int(t), coins[0]) for t in times + jitter[0])
    cascades = tuple(
        Episode(int(t) + 20 * MINUTE_MS, coins[1], "cascade", strength=1.3)
        for t in times + jitter[1]
    )
    return Scenario("planted", cascades, drifts)


def scenario_for(
    name: str,
    anchor_ms: int,
    coins: Sequence[str] = DEFAULT_COINS,
    every_ms: int = 8 * MINUTE_MS,
    live_ms: int = DAY_MS,
) -> Scenario:
    """The scenario `name` for a simulator started at `anchor_ms`.

    "calm" has no episodes. "planted" plants `planted_effects` over the 120 days before the
    anchor and the live span (for the scorecard). "cascade" and "squeeze" have one episode 40
    minutes before the top of the anchor's hour, so the latest closed hourly bar already holds a
    complete story, then one every `every_ms` after the anchor for `live_ms`, rotating through
    `coins` (the first one first). A live episode's build-up starts no earlier than the anchor
    (the past shows one clean story) nor before the coin's previous flush is over, so close
    episodes of one coin build up for less than an hour.
    """
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {name!r}")
    if not coins:
        raise ValueError("coins must name at least one coin, got none")
    unknown = [c for c in coins if c not in COINS]
    if unknown:
        raise ValueError(f"coins must be among {', '.join(COINS)}, got {', '.join(unknown)}")
    if every_ms < MINUTE_MS or every_ms % MINUTE_MS:
        raise ValueError(f"every_ms must be whole minutes >= 1 minute, got {every_ms}")
    if live_ms < 0:
        raise ValueError(f"live_ms must be >= 0, got {live_ms}")
    if name == "calm":
        return Scenario(name)
    if name == "planted":
        return planted_effects(anchor_ms - PLANTED_HISTORY_MS, anchor_ms + live_ms, coins)
    kind: EpisodeKind = "cascade" if name == "cascade" else "squeeze"
    anchor_minute = anchor_ms - anchor_ms % MINUTE_MS
    first = anchor_ms - anchor_ms % HOUR_MS - _FIRST_BEFORE_HOUR_MIN * MINUTE_MS
    starts = [first] + [anchor_minute + k * every_ms for k in range(1, live_ms // every_ms + 1)]
    episodes: list[Episode] = []
    flushed: dict[str, int] = {}  # coin -> end of its latest flush
    for i, start in enumerate(starts):
        coin = coins[i % len(coins)]
        earliest = max(start - _BUILD_MIN * MINUTE_MS, flushed.get(coin, start - DAY_MS))
        if i:
            earliest = max(earliest, anchor_minute)
        episodes.append(Episode(start, coin, kind, build_ms=start - min(earliest, start)))
        flushed[coin] = start + _FLUSH_MIN * MINUTE_MS
    return Scenario(name, tuple(episodes))


# --------------------------------------------------------------------------- shapes


def _drifted(
    drifts: list[Drift], arrays: dict[str, np.ndarray], start_ms: int
) -> dict[str, np.ndarray]:
    """`arrays` with the drifts' funding crowding and price drift added (a copy if any)."""
    n = len(arrays["close"])
    minutes = start_ms + np.arange(n, dtype=np.int64) * MINUTE_MS
    touching = [d for d in drifts if d.end_ms > start_ms]
    if not touching:
        return arrays
    out = dict(arrays)
    close = arrays["close"].astype(np.float64)
    funding = arrays["funding"].astype(np.float64)
    for d in touching:
        u = ((minutes - d.start_ms) // MINUTE_MS).astype(np.float64)
        crowd = _build(u, _DRIFT_BUILD_MIN) * _fade(u, _DRIFT_HOLD_MIN, _DRIFT_RELAX_MIN)
        funding = (1.0 - crowd) * funding + crowd * (
            d.funding + _FUNDING_TEXTURE * (funding - FUNDING_MEAN)
        )
        there = np.clip(u / _DRIFT_MIN, 0.0, 1.0)
        back = np.clip((u - _DRIFT_MIN) / _DRIFT_RETURN_MIN, 0.0, 1.0)
        close = close * np.exp(d.drift * np.where(u >= 0, there - back, 0.0))
    out["close"] = close.astype(arrays["close"].dtype)
    out["funding"] = funding.astype(arrays["funding"].dtype)
    return out


def _build(u: np.ndarray, length: int) -> np.ndarray:
    """0 before a build-up of `length` minutes ending at u = 0, rising linearly to 1 by its
    last minute (a step at u = 0 without one)."""
    if length == 0:
        return (u >= 0).astype(np.float64)
    return np.clip((u + length + 1) / length, 0.0, 1.0)


def _front(u: np.ndarray, length: int) -> np.ndarray:
    """0 → 1 over `length` minutes from u = 0, fastest at first (how a break or flush runs)."""
    y = np.clip((u + 1) / length, 0.0, 1.0)
    return 1.0 - (1.0 - y) ** 2


def _fade(u: np.ndarray, after: int, length: int) -> np.ndarray:
    """1 until `after`, then a smooth fall to 0 over `length` minutes."""
    y = np.clip((u - after) / length, 0.0, 1.0)
    return 1.0 - y * y * (3.0 - 2.0 * y)


def _decay(u: np.ndarray, length: int) -> np.ndarray:
    """0 before u = 0, then a convex fall from 1 to 0 over `length` minutes."""
    y = np.clip(u / length, 0.0, 1.0)
    return np.where(u >= 0, (1.0 - y) ** 2, 0.0)


def _liquidation_profile(u: np.ndarray) -> np.ndarray:
    """Share of an episode's liquidations in each minute: most in the first, none after the
    flush."""
    weights = _decay(u, _FLUSH_MIN) ** 1.5
    total = float(np.sum(_decay(np.arange(_FLUSH_MIN, dtype=np.float64), _FLUSH_MIN) ** 1.5))
    return weights / total


def liquidated_usd(episode: Episode) -> float:
    """USD of the crowded side an episode liquidates on top of the calm market (all
    exchanges): a share of the coin's open interest, with a floor for small coins."""
    oi = COINS[episode.coin].open_interest_usd
    return episode.strength * max(_LIQUIDATED_OF_OI * oi, _LIQUIDATED_MIN_USD)


def _overlay(
    spec: CoinSpec, episodes: list[Episode], minutes: np.ndarray, w: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The minute series in `w` (float64, one value per minute starting at `minutes`) with
    `episodes` drawn in. Moves (price, OI, volume, liquidations) add up across episodes;
    levels (funding, positioning, taker share) follow the episode pulling hardest."""
    log_price = np.zeros(len(minutes))
    log_oi = np.zeros(len(minutes))
    extra_volume = np.zeros(len(minutes))
    crowding = np.zeros(len(minutes))
    one_sided = np.zeros(len(minutes))
    story_at = np.zeros(len(minutes), dtype=np.int64)
    taker_at = np.zeros(len(minutes), dtype=np.int64)
    targets: list[tuple[float, float, float, float]] = []  # funding, retail, top, taker
    liquidations = {"liq_long": np.zeros(len(minutes)), "liq_short": np.zeros(len(minutes))}
    for i, e in enumerate(episodes):
        story = _STORIES[e.kind]
        k = e.strength
        u = ((minutes - e.start_ms) // MINUTE_MS).astype(np.float64)
        build_min = e.build_ms // MINUTE_MS
        built = _build(u, build_min)
        full = min(build_min / _BUILD_MIN, 1.0)  # short build-ups build up less
        broken = _front(u, _BREAK_MIN)
        log_price += (
            story.crowd
            * k
            * (
                _BUILD_PRICE * full * built * (1.0 - broken)
                - _BREAK_PRICE * broken * _fade(u, _BREAK_MIN, _PRICE_RECOVERY_MIN)
            )
        )
        log_oi += (
            k
            * (_BUILD_OI * full * built - _FLUSH_OI * _front(u, _FLUSH_MIN))
            * _fade(u, _FLUSH_MIN, _OI_RECOVERY_MIN)
        )
        extra_volume += k * _VOLUME_SPIKE * _decay(u, _VOLUME_MIN)
        liquidations[story.liquidated] += liquidated_usd(e) * _liquidation_profile(u)
        level = built * _fade(u, _HOLD_MIN, _RELAX_MIN)
        taker = _decay(u, _TAKER_MIN)
        story_at = np.where(level > crowding, i, story_at)
        crowding = np.maximum(crowding, level)
        taker_at = np.where(taker > one_sided, i, taker_at)
        one_sided = np.maximum(one_sided, taker)
        targets.append(
            (
                FUNDING_MEAN + k * (story.funding - FUNDING_MEAN),
                GLOBAL_LONG_MEAN + k * (story.retail_long - GLOBAL_LONG_MEAN),
                TOP_ACCOUNT_LONG_MEAN + k * (story.top_long - TOP_ACCOUNT_LONG_MEAN),
                0.5 + k * (story.taker_buy - 0.5),
            )
        )
    target = np.array(targets)
    funding, retail, top, _ = target[story_at].T
    taker_buy = np.clip(target[taker_at, 3], 0.01, 0.99)

    def towards(base: np.ndarray, level: np.ndarray, mean: float, texture: float) -> np.ndarray:
        return (1.0 - crowding) * base + crowding * (level + texture * (base - mean))

    volume = w["volume"] * (1.0 + extra_volume)
    buy_share = w["buy"] / w["volume"]
    buy_share = (1.0 - one_sided) * buy_share + one_sided * taker_buy
    top_shift = top - TOP_ACCOUNT_LONG_MEAN  # the same lean for both top-trader measures
    return {
        "close": w["close"] * np.exp(log_price),
        "oi": w["oi"] * np.exp(log_oi),
        "funding": towards(w["funding"], funding, FUNDING_MEAN, _FUNDING_TEXTURE),
        "volume": volume,
        "buy": volume * buy_share,
        "global_long": towards(w["global_long"], retail, GLOBAL_LONG_MEAN, _POSITIONING_TEXTURE),
        "top_account_long": towards(
            w["top_account_long"], top, TOP_ACCOUNT_LONG_MEAN, _POSITIONING_TEXTURE
        ),
        "top_position_long": towards(
            w["top_position_long"],
            TOP_POSITION_LONG_MEAN + top_shift,
            TOP_POSITION_LONG_MEAN,
            _POSITIONING_TEXTURE,
        ),
        "liq_long": w["liq_long"] + liquidations["liq_long"],
        "liq_short": w["liq_short"] + liquidations["liq_short"],
    }
