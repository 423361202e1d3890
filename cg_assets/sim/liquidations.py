"""Real-time liquidation events drawn from the synthetic market, for the WebSocket and REST
simulators alike.

One feed is the single source of truth: the WebSocket simulator pushes what it generates and
REST `liquidation/order` serves the same events from its history, so a client can match a
pushed event with its REST copy field for field (the spool's gap filler depends on that).

Events are generated lazily for the time elapsed since the last call to `advance()` (the
WebSocket server calls it every push, REST before each query), in one numpy pass per call, so a
rate of 50,000 events/s costs a few milliseconds per push. They are stored column-wise in
time-ordered chunks: two million events take about 70 MB instead of the ~400 MB that as many
Python objects would.

When the market plays a scenario, each episode's liquidation orders
(`cg_assets.sim.liquidation_episodes`) join the random ones as the episode's minutes pass, and
`injected` records them (and every `burst`) so a benchmark can measure alert latency from the
moment an order existed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from cg_assets.sim.instruments import COINS, EXCHANGES, Instrument
from cg_assets.sim.liquidation_episodes import EpisodeOrders
from cg_assets.sim.liquidation_events import (
    USD_DECIMALS,
    EventBatch,
    EventNames,
    Injection,
    LiquidationEvent,
    Side,
    concat,
    empty_batch,
    usd_sum,
)
from cg_assets.sim.market import SyntheticMarket

Clock = Callable[[], int]

# usd_value ~ lognormal: median $2,500 and a tail where about 1 event in 5,000 is >= $1M
# (one every ~15 minutes at the default 5 events/s), so whale alerts have something to catch.
_USD_MEDIAN = 2_500.0
_USD_SIGMA = 1.7
# Chunks below this size are merged with the next batch, so a slow feed does not pile up
# millions of tiny arrays over its eight days of history.
_MIN_CHUNK = 4_096


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _usdt_perpetuals(market: SyntheticMarket) -> list[Instrument]:
    return [
        inst
        for listing in market.instruments().values()
        for inst in listing
        if inst.kind == "linear_perp" and inst.quote_asset == "USDT"
    ]


def _volume_weights(market: SyntheticMarket, instruments: Sequence[Instrument]) -> np.ndarray:
    """Each instrument's share of all liquidations: the coin's volume times the exchange's
    volume share among exchanges listing the coin times the instrument's share there."""
    weights = []
    for inst in instruments:
        listing = market.listing_exchanges(inst.base_asset)
        total = sum(EXCHANGES[e].volume_share for e in listing)
        exchange_share = EXCHANGES[inst.exchange].volume_share / total
        weights.append(COINS[inst.base_asset].daily_volume_usd * exchange_share * inst.share)
    w = np.array(weights)
    return w / w.sum()


class LiquidationFeed:
    """Liquidations over the market's listed USDT perpetuals, generated as time passes.

    Coin and exchange are drawn by volume share; the price is the instrument's price at the
    event's millisecond (`SyntheticMarket.price_at`, consistent with REST price history); the
    side follows the market's long/short liquidation split in that minute, so longs dominate
    after down-moves; usd values are lognormal with a heavy tail. `rate_per_s` may be changed
    at any time and applies from the next `advance()`. History keeps the newest `max_events`
    events of the last `history_s` seconds. `clock` returns milliseconds; the feed starts
    empty at the clock's time of construction (so a scenario's episodes before then have no
    orders here, only their bars in the market). Thread-safe.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        seed: int = 7,
        rate_per_s: float = 5.0,
        history_s: float = 8 * 24 * 3600,
        max_events: int = 2_000_000,
        clock: Clock | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.market = market
        self.rate_per_s = rate_per_s
        self.history_ms = int(history_s * 1000)
        self.max_events = max_events
        self.clock = clock or _wall_clock_ms
        instruments = _usdt_perpetuals(market)
        self.names = EventNames.of(instruments)
        self._weights = _volume_weights(market, instruments)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._chunks: deque[EventBatch] = deque()
        self._size = 0
        self._next_seq = 0
        self._lock = threading.Lock()
        scenario = market.scenario
        self._episode_orders = EpisodeOrders(
            [
                e
                for e in (scenario.episodes if scenario else ())
                if len(self._candidates(e.coin, None))
            ],
            seed,
            self._candidates,
            self._weights,
        )
        self._injected: list[Injection] = []
        self._warm_up(self.clock())
        self._last_ms = self.clock()

    def _warm_up(self, now_ms: int) -> None:
        """Generate the market's minute grid up to now (seconds for a long listing history)
        here rather than in the first WebSocket push."""
        if now_ms >= self.market.epoch_ms:
            for coin in {inst.base_asset for inst in self.instruments}:
                self.market.long_liquidation_share(coin, np.array([now_ms]))

    @property
    def rate_per_s(self) -> float:
        return self._rate_per_s

    @rate_per_s.setter
    def rate_per_s(self, value: float) -> None:
        if not value >= 0 or math.isinf(value):
            raise ValueError(f"rate_per_s must be a finite number >= 0, got {value!r}")
        self._rate_per_s = float(value)

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        return self.names.instruments

    @property
    def generated_to_ms(self) -> int:
        """Every event with a time at or before this is generated: a later `advance()` only
        adds events after it."""
        return self._last_ms

    @property
    def last_seq(self) -> int:
        """Seq of the newest event generated so far (-1 before the first)."""
        return self._next_seq - 1

    def __len__(self) -> int:
        return self._size

    @property
    def injected(self) -> list[Injection]:
        """Every injection so far (episode waves and bursts), in the order they completed."""
        with self._lock:
            return list(self._injected)

    # ------------------------------------------------------------------ generation

    def advance(self, now_ms: int | None = None) -> EventBatch:
        """Generate the events of (last advance, now] and return them; time never goes back."""
        now = self.clock() if now_ms is None else now_ms
        with self._lock:
            # No event before the market's first minute, nor beyond what history would keep.
            start = max(self._last_ms, now - self.history_ms, self.market.epoch_ms - 1)
            if now <= start:
                self._last_ms = max(self._last_ms, now)
                return empty_batch(self.names)
            n = int(self._rng.poisson(self._rate_per_s * (now - start) / 1000))
            if n > self.max_events:  # only the newest max_events would survive anyway
                start = now - int((now - start) * self.max_events / n)
                n = self.max_events
            self._last_ms = now
            times = np.sort(self._rng.integers(start + 1, now + 1, n, dtype=np.int64))
            inst = self._rng.choice(len(self._weights), n, p=self._weights)
            usd = self._usd_values(n)
            long_ = self._sides(times, inst)
            planned, completed = self._episode_orders.due(start, now)
            self._injected.extend(completed)
            if planned is not None:
                times, inst, usd, long_ = (
                    np.concatenate([a, b])
                    for a, b in zip((times, inst, usd, long_), planned, strict=True)
                )
                order = np.argsort(times, kind="stable")
                times, inst, usd, long_ = times[order], inst[order], usd[order], long_[order]
            return self._append(times, inst, usd, long_)

    def burst(
        self,
        coin: str,
        usd_total: float,
        n: int,
        side: Side | None = None,
        exchange: str | None = None,
    ) -> list[LiquidationEvent]:
        """Inject a cascade now: `n` liquidations of `coin` worth `usd_total` in all, on one
        side (default: the side the market is liquidating now), on `exchange` or spread over
        exchanges by volume. All carry the current millisecond, after everything before them.
        With n=1 it is one order of exactly `usd_total` (what a control endpoint wants).
        """
        candidates = self._candidates(coin, exchange)
        if n < 1:
            raise ValueError(f"a burst needs at least one event, got n={n}")
        if not len(candidates):
            raise ValueError(f"no USDT perpetual of {coin!r} on {exchange or 'any exchange'}")
        self.advance()
        with self._lock:
            if side is None:
                now = np.array([self._last_ms])
                side = (
                    "long" if self.market.long_liquidation_share(coin, now)[0] >= 0.5 else "short"
                )
            p = self._weights[candidates] / self._weights[candidates].sum()
            inst = self._rng.choice(candidates, n, p=p)
            times = np.full(n, self._last_ms, dtype=np.int64)
            parts = self._rng.lognormal(0.0, 1.0, n)
            usd = np.round(usd_total * parts / parts.sum(), USD_DECIMALS)
            batch = self._append(times, inst, usd, np.full(n, side == "long"))
            self._injected.append(
                Injection(self._last_ms, coin, side, usd_sum(usd), n, float(usd.max()), "burst")
            )
            return batch.events()

    def _candidates(self, coin: str, exchange: str | None) -> np.ndarray:
        """Indexes of the coin's instruments (on `exchange`, or all)."""
        return np.array(
            [
                i
                for i, inst in enumerate(self.instruments)
                if inst.base_asset == coin and exchange in (None, inst.exchange)
            ],
            dtype=np.int16,
        )

    def _usd_values(self, n: int) -> np.ndarray:
        usd = self._rng.lognormal(math.log(_USD_MEDIAN), _USD_SIGMA, n)
        return np.round(np.maximum(usd, 1.0), USD_DECIMALS)

    def _sides(self, times: np.ndarray, inst: np.ndarray) -> np.ndarray:
        """Whether each event liquidated a long, drawn from the market's long/short split in
        its minute."""
        p_long = np.empty(len(times))
        for i in np.unique(inst).tolist():
            at = inst == i
            p_long[at] = self.market.long_liquidation_share(
                self.instruments[i].base_asset, times[at]
            )
        return self._rng.random(len(times)) < p_long

    def _append(
        self, times: np.ndarray, inst: np.ndarray, usd: np.ndarray, long_: np.ndarray
    ) -> EventBatch:
        """Price the events, store them and prune history (lock held)."""
        n = len(times)
        price = np.empty(n)
        for i in np.unique(inst).tolist():
            at = inst == i
            spec = self.instruments[i]
            raw = self.market.price_at(spec.exchange, spec.instrument_id, times[at])
            price[at] = np.round(raw, COINS[spec.base_asset].price_decimals)
        seq = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        self._next_seq += n
        batch = EventBatch(self.names, seq, times, inst.astype(np.int16), price, usd, long_)
        self._store(batch)
        return batch

    def _store(self, batch: EventBatch) -> None:
        if len(batch):
            self._size += len(batch)
            if self._chunks and len(self._chunks[-1]) < _MIN_CHUNK:
                batch = concat(self.names, [self._chunks.pop(), batch])
            self._chunks.append(batch)
        self._prune(self._last_ms - self.history_ms)

    def _prune(self, oldest_ms: int) -> None:
        """Drop events older than `oldest_ms` and beyond `max_events`, oldest first."""
        while self._chunks:
            first = self._chunks[0]
            keep_from = max(
                int(np.searchsorted(first.time, oldest_ms, side="left")),
                self._size - self.max_events,
            )
            if keep_from <= 0:
                return
            self._chunks.popleft()
            self._size -= len(first)
            if keep_from < len(first):
                self._chunks.appendleft(first.take(slice(keep_from, None)))
                self._size += len(first) - keep_from
                return

    # ------------------------------------------------------------------ reading

    def since(self, seq: int) -> EventBatch:
        """Events generated after event `seq` that are still in history, oldest first."""
        with self._lock:
            chunks = list(self._chunks)
        picked: list[EventBatch] = []
        for chunk in reversed(chunks):
            if chunk.seq[-1] <= seq:
                break
            picked.append(chunk.take(slice(int(np.searchsorted(chunk.seq, seq, "right")), None)))
        return concat(self.names, picked[::-1])

    def query(
        self,
        start_ms: int,
        end_ms: int,
        coin: str | None = None,
        exchange: str | None = None,
        min_usd: float = 0.0,
        newest: int | None = None,
    ) -> EventBatch:
        """Events with start_ms <= time < end_ms matching the filters, oldest first; with
        `newest`, only that many of the most recent ones."""
        with self._lock:
            chunks = list(self._chunks)
        wanted = np.array(
            [
                coin in (None, inst.base_asset) and exchange in (None, inst.exchange)
                for inst in self.instruments
            ]
        )
        picked: list[EventBatch] = []
        found = 0
        for chunk in reversed(chunks):
            lo = int(np.searchsorted(chunk.time, start_ms, "left"))
            hi = int(np.searchsorted(chunk.time, end_ms, "left"))
            part = chunk.take(slice(lo, hi))
            part = part.take(wanted[part.inst] & (part.usd_value >= min_usd))
            picked.append(part)
            found += len(part)
            if (newest is not None and found >= newest) or lo > 0:
                break
        batch = concat(self.names, picked[::-1])
        return batch if newest is None else batch.take(slice(max(len(batch) - newest, 0), None))

    def events(self) -> list[LiquidationEvent]:
        """The whole history as objects, oldest first (`query` selects a part)."""
        return self.query(-(2**62), 2**62).events()
