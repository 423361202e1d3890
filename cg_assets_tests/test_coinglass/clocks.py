"""Clocks for limiter tests: single-thread fake time and multi-thread virtual time."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable


class FakeClock:
    """A clock for one thread: time moves only when that thread sleeps or the test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class VirtualClock:
    """Simulated time for several threads: it stands still while any participant is working.

    Time advances only when every participant (a thread of `run_threads`) sleeps, and then
    straight to the earliest deadline, waking exactly that sleeper. Minutes of rate-limited
    traffic thus run in milliseconds with the same interleaving as in real time, and a server
    reading this clock sees the request times the limiter intended.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._active = 0
        self._sleepers: list[tuple[float, int]] = []
        self._woken: set[int] = set()
        self._seq = itertools.count()

    def __call__(self) -> float:
        with self._cond:
            return self._now

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._advance_locked()

    def sleep(self, seconds: float) -> None:
        with self._cond:
            token = next(self._seq)
            heapq.heappush(self._sleepers, (self._now + max(seconds, 0.0), token))
            self._active -= 1
            self._advance_locked()
            while token not in self._woken:
                self._cond.wait()
            self._woken.discard(token)

    def _advance_locked(self) -> None:
        if self._active == 0 and self._sleepers:
            deadline, token = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            self._woken.add(token)
            self._active += 1  # on the sleeper's behalf, so nobody else advances meanwhile
            self._cond.notify_all()

    def run_threads(self, n: int, target: Callable[[], None]) -> None:
        """Run `target` in `n` participant threads and wait for all of them.

        All are registered before any starts, so time cannot move while one is still starting.
        """

        def participant() -> None:
            try:
                target()
            finally:
                self._leave()

        with self._cond:
            self._active += n
        threads = [threading.Thread(target=participant) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "virtual-time threads deadlocked"
