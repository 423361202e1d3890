from __future__ import annotations

import threading
from collections import deque
from itertools import pairwise

import pytest

from cg_assets.coinglass.ratelimit import RateLimiter, shared_limiter

from .clocks import FakeClock, VirtualClock


def make(clock: FakeClock, rate: int = 60, safety: float = 1.0) -> RateLimiter:
    return RateLimiter(rate, safety, clock=clock, sleep=clock.sleep)


def acquire_times(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        limiter.acquire()
        times.append(clock())
    return times


def test_slots_are_strictly_spaced_from_the_first_request(clock):
    times = acquire_times(make(clock), clock, 5)
    assert [t - times[0] for t in times] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert times[0] == 1000.0  # the first request does not wait


def test_default_safety_spaces_below_the_nominal_rate(clock):
    limiter = RateLimiter(1200, clock=clock, sleep=clock.sleep)
    assert limiter.spacing_s == pytest.approx(60 / (1200 * 0.95))


def test_idle_time_earns_no_burst(clock):
    limiter = make(clock)
    acquire_times(limiter, clock, 3)
    clock.advance(300)
    times = acquire_times(limiter, clock, 3)
    assert [t - times[0] for t in times] == [0.0, 1.0, 2.0]


def test_penalize_holds_the_next_request(clock):
    limiter = make(clock)
    limiter.acquire()
    limiter.penalize(30)
    limiter.acquire()
    assert clock() == 1030.0


def test_penalty_during_a_wait_makes_sleepers_take_a_fresh_slot(clock):
    penalized: list[float] = []
    limiters: list[RateLimiter] = []

    def sleep_while_another_thread_gets_429(seconds: float) -> None:
        if not penalized:
            penalized.append(clock())
            limiters[0].penalize(20)
        clock.sleep(seconds)

    limiter = RateLimiter(60, 1.0, clock=clock, sleep=sleep_while_another_thread_gets_429)
    limiters.append(limiter)
    limiter.acquire()
    limiter.acquire()
    assert clock() >= penalized[0] + 20


def test_usage_by_another_process_pushes_the_schedule_out(clock):
    limiter = make(clock, rate=1200)
    limiter.acquire()
    limiter.observe(use=1100, limit=1200)  # 21 over the 90 % line, almost none of it ours
    start = clock()
    limiter.acquire()
    assert clock() - start == pytest.approx(21 * 60 / 1100)


def test_waits_for_enough_of_its_own_requests_to_leave_the_window(clock):
    limiter = make(clock, rate=60)  # one slot per second
    times = acquire_times(limiter, clock, 10)
    limiter.observe(use=60, limit=60)  # 50 from elsewhere: 7 must leave to get under 54
    limiter.acquire()
    assert clock() == times[6] + 60


def test_usage_below_ninety_percent_changes_nothing(clock):
    limiter = make(clock, rate=1200)
    limiter.acquire()
    limiter.observe(use=1079, limit=1200)
    start = clock()
    limiter.acquire()
    assert clock() - start == pytest.approx(limiter.spacing_s)


def test_own_full_rate_does_not_throttle_itself(clock):
    limiter = RateLimiter(120, 0.95, clock=clock, sleep=clock.sleep)
    times = acquire_times(limiter, clock, 114)  # 95 % of the window, all ours
    limiter.observe(use=114, limit=120)
    limiter.acquire()
    assert clock() - times[-1] == pytest.approx(limiter.spacing_s)


def test_a_server_limit_below_the_configured_rate_is_adopted(clock):
    limiter = make(clock, rate=1200)
    limiter.observe(use=1, limit=60)
    assert limiter.rate_per_min == 60
    assert limiter.spacing_s == pytest.approx(1.0)


@pytest.mark.parametrize(("use", "limit"), [(None, 100), (10, None), (0, 0), (5, -1)])
def test_missing_headers_are_ignored(clock, use, limit):
    limiter = make(clock)
    limiter.observe(use, limit)
    assert limiter.rate_per_min == 60
    assert acquire_times(limiter, clock, 2) == [1000.0, 1001.0]


def test_threads_share_one_strictly_spaced_schedule(vclock):
    limiter = RateLimiter(120, 0.95, clock=vclock, sleep=vclock.sleep)
    sent: list[float] = []

    def worker() -> None:
        for _ in range(50):
            limiter.acquire()
            sent.append(vclock())

    vclock.run_threads(4, worker)
    sent.sort()
    assert len(sent) == 200
    gaps = [b - a for a, b in pairwise(sent)]
    assert min(gaps) == pytest.approx(limiter.spacing_s)


class SlidingWindow:
    """The server's per-key count over the last 60 s, as the simulator keeps it."""

    def __init__(self, clock: VirtualClock, limit: int) -> None:
        self.clock = clock
        self.limit = limit
        self.times: deque[float] = deque()
        self.rejected = 0
        self.peak = 0
        self.lock = threading.Lock()

    def hit(self) -> int | None:
        with self.lock:
            now = self.clock()
            while self.times and self.times[0] <= now - 60:
                self.times.popleft()
            if len(self.times) >= self.limit:
                self.rejected += 1
                return None
            self.times.append(now)
            self.peak = max(self.peak, len(self.times))
            return len(self.times)


def two_processes_on_one_key(vclock: VirtualClock, feedback: bool) -> SlidingWindow:
    """Two limiters (two processes), each at the full rate, 150 requests each."""
    window = SlidingWindow(vclock, limit=120)
    limiters = iter([RateLimiter(120, clock=vclock, sleep=vclock.sleep) for _ in range(2)])
    lock = threading.Lock()

    def process() -> None:
        with lock:
            limiter = next(limiters)
        for _ in range(150):
            limiter.acquire()
            use = window.hit()
            if use is None:
                limiter.penalize(1.0)
            elif feedback:
                limiter.observe(use, window.limit)

    vclock.run_threads(2, process)
    return window


def test_processes_sharing_a_key_collide_without_feedback(vclock):
    assert two_processes_on_one_key(vclock, feedback=False).rejected > 0


def test_usage_feedback_lets_processes_share_a_key_without_429(vclock):
    window = two_processes_on_one_key(vclock, feedback=True)
    assert window.rejected == 0
    assert window.peak <= 120


def test_registry_shares_one_limiter_per_server_key_and_rate():
    a = shared_limiter("http://h:1/", "key-a", 300)
    assert shared_limiter("http://h:1", "key-a", 300) is a
    assert shared_limiter("http://h:1", "key-b", 300) is not a
    assert shared_limiter("http://h:1", "key-a", 80) is not a
    assert shared_limiter("http://h:2", "key-a", 300) is not a


def test_registry_does_not_hold_the_key_in_clear():
    from cg_assets.coinglass import ratelimit

    shared_limiter("http://h:9", "super-secret-key", 300)
    assert "super-secret-key" not in repr(list(ratelimit._registry))


def test_rejects_a_nonsense_rate(clock):
    with pytest.raises(ValueError, match="rate_per_min > 0"):
        RateLimiter(0, clock=clock, sleep=clock.sleep)
