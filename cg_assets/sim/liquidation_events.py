"""Liquidation events as the feed stores and serves them: column-wise batches that protocol
layers format without building an object per event, the event object for tests and tools,
and the record of liquidations injected on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cg_assets.sim.instruments import Instrument

Side = Literal["long", "short"]
Wave = Literal["opening", "tail", "burst"]
USD_DECIMALS = 4  # usd values are rounded to this, and so are totals of them


@dataclass(frozen=True, slots=True)
class Injection:
    """Liquidations put into the feed on purpose: an episode's opening minute or tail, or one
    `burst`. `time_ms` is its first order's time, the earliest a client could see it; the
    record is added once all of its orders are in the feed."""

    time_ms: int
    coin: str
    side: Side
    usd_total: float
    orders: int
    largest_usd: float
    wave: Wave


def usd_sum(usd: np.ndarray) -> float:
    """A total rounded like the values, so it does not depend on how the sum was split up."""
    return round(float(usd.sum()), USD_DECIMALS)


@dataclass(frozen=True, slots=True)
class LiquidationEvent:
    """One forced liquidation; `side` is the side that was liquidated."""

    seq: int  # feed-wide, strictly increasing in generation order
    time: int  # ms
    coin: str
    exchange: str  # display name, e.g. "Binance"
    pair: str  # the exchange's instrument id, e.g. "BTCUSDT"
    price: float
    usd_value: float
    side: Side


@dataclass(frozen=True)
class EventNames:
    """Per-instrument labels as object arrays, so a batch maps indexes to names in C."""

    instruments: tuple[Instrument, ...]
    coin: np.ndarray
    exchange: np.ndarray
    pair: np.ndarray

    @classmethod
    def of(cls, instruments: Sequence[Instrument]) -> EventNames:
        def column(values: Iterable[str]) -> np.ndarray:
            return np.array(list(values), dtype=object)

        return cls(
            tuple(instruments),
            column(i.base_asset for i in instruments),
            column(i.exchange for i in instruments),
            column(i.instrument_id for i in instruments),
        )


@dataclass(frozen=True)
class EventBatch:
    """Events as parallel numpy columns, in (time, seq) order; what protocol layers format.

    `inst` indexes the feed's instrument table; `long` is True where a long was liquidated.
    """

    names: EventNames
    seq: np.ndarray
    time: np.ndarray
    inst: np.ndarray
    price: np.ndarray
    usd_value: np.ndarray
    long: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def last_seq(self) -> int | None:
        return int(self.seq[-1]) if len(self.seq) else None

    def take(self, index: slice | np.ndarray) -> EventBatch:
        """The events selected by a slice, boolean mask or index array."""
        return EventBatch(
            self.names,
            self.seq[index],
            self.time[index],
            self.inst[index],
            self.price[index],
            self.usd_value[index],
            self.long[index],
        )

    def coins(self) -> list[str]:
        return self.names.coin[self.inst].tolist()

    def exchanges(self) -> list[str]:
        return self.names.exchange[self.inst].tolist()

    def pairs(self) -> list[str]:
        return self.names.pair[self.inst].tolist()

    def events(self) -> list[LiquidationEvent]:
        """The batch as objects: convenient for tests and tools, too slow for the hot path."""
        return [
            LiquidationEvent(s, t, c, e, p, price, usd, "long" if long_ else "short")
            for s, t, c, e, p, price, usd, long_ in zip(
                self.seq.tolist(),
                self.time.tolist(),
                self.coins(),
                self.exchanges(),
                self.pairs(),
                self.price.tolist(),
                self.usd_value.tolist(),
                self.long.tolist(),
                strict=True,
            )
        ]


def concat(names: EventNames, batches: Sequence[EventBatch]) -> EventBatch:
    if not batches:
        return empty_batch(names)
    if len(batches) == 1:
        return batches[0]
    columns = ("seq", "time", "inst", "price", "usd_value", "long")
    return EventBatch(names, *(np.concatenate([getattr(b, c) for b in batches]) for c in columns))


def empty_batch(names: EventNames) -> EventBatch:
    return EventBatch(
        names,
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.int16),
        np.empty(0),
        np.empty(0),
        np.empty(0, bool),
    )
