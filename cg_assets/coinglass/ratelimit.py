"""One request schedule per (server, key, rate), shared by every thread of the process.

CoinGlass counts requests per key over a sliding 60 s window (reference §3). A token bucket
would allow a burst of its capacity on top of the steady rate, which such a window counts in
full, so this limiter hands out strictly spaced slots instead. Several clients built for the
same key (one per Dagster op, say) get the same limiter from `shared_limiter`, so together they
stay under the key's limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from cg_assets.coinglass.slots import SlotStore

logger = logging.getLogger("cg_assets.coinglass")

# The share of the key's limit we let the window reach once another process (say a second
# Dagster run) uses the same key: the rest is margin for its requests while we wait.
USE_THRESHOLD = 0.9
WINDOW_S = 60.0
# Our count of our own requests in the window can be off by the requests in flight, so
# only more unexplained usage than this counts as another process.
FOREIGN_SLACK = 2


class RateLimiter:
    """Strictly spaced request slots: no two slots closer than 60 / (rate x safety) seconds.

    The server's usage headers (`observe`) and 429s (`penalize`) push the schedule out when
    other users of the key leave less room. With a `store`, the schedule is the key's shared
    one (`cg_assets.coinglass.slots`), so every process using the key keeps to one rate; the
    clock must then be the wall clock, which all those processes share. `clock` and `sleep`
    are injectable so tests can run minutes of schedule in milliseconds.
    """

    def __init__(
        self,
        rate_per_min: int,
        safety: float = 0.95,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        store: SlotStore | None = None,
        store_key: str = "",
    ) -> None:
        if rate_per_min <= 0 or not 0 < safety <= 1:
            raise ValueError(
                f"need rate_per_min > 0 and 0 < safety <= 1, got {rate_per_min}, {safety}"
            )
        self.rate_per_min = rate_per_min
        self.safety = safety
        self._clock = clock
        self._sleep = sleep
        self._store = store
        self._store_key = store_key
        self._lock = threading.Lock()
        self._spacing = 60.0 / (rate_per_min * safety)
        self._next_slot = -math.inf
        # Our own slots of the last window, to tell our usage from another process's.
        self._own_slots: deque[float] = deque()
        # Bumped whenever the schedule is pushed out, so threads already asleep on an older
        # slot take a fresh one instead of all firing together when they wake.
        self._generation = 0

    @property
    def spacing_s(self) -> float:
        """Seconds between consecutive slots."""
        return self._spacing

    def acquire(self) -> float:
        """Block until this caller's slot; returns the seconds waited."""
        started = self._clock()
        while True:
            slot, generation = self._take()
            self._sleep_until(slot)
            with self._lock:
                if self._current_generation() == generation:
                    now = self._clock()
                    self._own_in_window_locked(now)  # keeps the record one window long
                    self._own_slots.append(now)
                    return now - started

    def _take(self) -> tuple[float, int]:
        if self._store is not None:
            return self._store.take(self._store_key, self._spacing, self._clock())
        with self._lock:
            slot = max(self._clock(), self._next_slot)
            self._next_slot = slot + self._spacing
            return slot, self._generation

    def _current_generation(self) -> int:
        if self._store is not None:
            return self._store.generation(self._store_key)
        return self._generation

    def observe(self, use: int | None, limit: int | None) -> None:
        """Feed the server's API-KEY-USE-LIMIT / API-KEY-MAX-LIMIT headers.

        A server limit below our rate means the configured rate is wrong, so we adopt the
        server's. Then, if the window is fuller than we allow, the next slot waits until
        enough requests have left it. Our own requests leave at times we know; usage we did
        not send (another process on the same key) is assumed to leave evenly. We allow
        `safety` of the limit on our own and 90 % once someone else is using the key, which
        keeps the margin for their next requests.
        """
        if not use or not limit or limit <= 0:
            return
        with self._lock:
            if limit < self.rate_per_min:
                self._adopt_rate_locked(limit)
            now = self._clock()
            own = self._own_in_window_locked(now)
            shared = use - own > FOREIGN_SLACK
            ceiling = math.floor(limit * (USE_THRESHOLD if shared else self.safety))
            need = use - ceiling + 1
            if need <= 0:
                return
            if need <= own:
                self._push_locked(self._own_slots[need - 1] + WINDOW_S)
            else:
                self._push_locked(now + need * WINDOW_S / use)

    def penalize(self, seconds: float) -> None:
        """Hold every thread for `seconds` (after a 429): the whole window is exhausted."""
        with self._lock:
            self._push_locked(self._clock() + seconds)

    def _adopt_rate_locked(self, limit: int) -> None:
        logger.warning(
            "server allows %d requests/min for this key but %d were configured; using %d",
            limit,
            self.rate_per_min,
            limit,
        )
        self.rate_per_min = limit
        self._spacing = 60.0 / (limit * self.safety)

    def _own_in_window_locked(self, now: float) -> int:
        while self._own_slots and self._own_slots[0] <= now - WINDOW_S:
            self._own_slots.popleft()
        return len(self._own_slots)

    def _push_locked(self, not_before: float) -> None:
        if self._store is not None:
            self._store.push(self._store_key, not_before)
        elif not_before > self._next_slot:
            self._next_slot = not_before
            self._generation += 1

    def _sleep_until(self, deadline: float) -> None:
        while (remaining := deadline - self._clock()) > 0:
            self._sleep(remaining)


_registry: dict[tuple[str, str, int, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(
    base_url: str,
    api_key: str | None,
    rate_per_min: int,
    safety: float = 0.95,
    store: SlotStore | None = None,
) -> RateLimiter:
    """The process-wide limiter for this server, key and rate (created on first use).

    With a `store`, it also keeps to the key's schedule shared with other processes. The key
    is hashed so neither the registry nor the store holds it in clear. The first caller's
    `safety` wins for a given triple.
    """
    key_hash = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
    server = base_url.rstrip("/")
    registry_key = (server, key_hash, rate_per_min, store.ident if store else "")
    with _registry_lock:
        limiter = _registry.get(registry_key)
        if limiter is None:
            limiter = _registry[registry_key] = (
                RateLimiter(rate_per_min, safety)
                if store is None
                else RateLimiter(
                    rate_per_min,
                    safety,
                    clock=time.time,
                    store=store,
                    store_key=f"{server}#{key_hash}",
                )
            )
        return limiter
