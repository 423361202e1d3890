"""The key's request schedule shared across processes: the same tests for SQLite and
PostgreSQL (a real server, see postgres_harness)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cg_assets.coinglass.ratelimit import RateLimiter
from cg_assets.coinglass.slots import SlotStore, slot_store


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "s.sqlite")
    return request.getfixturevalue("postgres_dsn")


@pytest.fixture
def store(location: str) -> SlotStore:
    return slot_store(location)


def test_slots_are_spaced_from_now_or_the_last_slot(store: SlotStore):
    assert store.take("k", 0.5, now=100.0) == (100.0, 0)
    assert store.take("k", 0.5, now=100.1) == (100.5, 0)
    assert store.take("k", 0.5, now=200.0) == (200.0, 0)  # idle: no backlog of old slots
    assert store.take("other", 0.5, now=100.0) == (100.0, 0)  # keys are independent


def test_a_push_moves_the_schedule_and_bumps_the_generation_once(store: SlotStore):
    store.take("k", 1.0, now=10.0)
    store.push("k", 50.0)
    assert store.generation("k") == 1
    store.push("k", 30.0)  # earlier than the schedule already is: no effect
    assert store.generation("k") == 1
    assert store.take("k", 1.0, now=11.0) == (50.0, 1)


TAKER = """
import sys
from cg_assets.coinglass.slots import slot_store
store = slot_store(sys.argv[1])
for _ in range(int(sys.argv[2])):
    slot, _ = store.take("key", 0.25, now=1000.0)
    print(repr(slot), flush=True)
"""


def test_processes_sharing_the_store_never_get_the_same_or_closer_slots(
    store: SlotStore, location: str
):
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, location, "40"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    slots = sorted(float(line) for t in takers for line in t.communicate(timeout=120)[0].split())
    assert all(t.returncode == 0 for t in takers)
    assert len(slots) == 160
    assert slots == [1000.0 + 0.25 * i for i in range(160)]


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_two_limiters_on_one_store_keep_one_rate_and_share_a_penalty(store: SlotStore):
    wall = FakeWall()

    def limiter() -> RateLimiter:
        return RateLimiter(60, 1.0, clock=wall, sleep=wall.sleep, store=store, store_key="k")

    a, b = limiter(), limiter()
    granted = []
    for lim in (a, b, a, b):
        lim.acquire()
        granted.append(wall.now)
    assert granted == [1000.0, 1001.0, 1002.0, 1003.0]  # one second apart across both
    a.penalize(30.0)
    b.acquire()
    assert wall.now == pytest.approx(1033.0)  # b waits out a's 429 too


def test_the_ident_never_carries_the_password(postgres_dsn: str):
    with_password = postgres_dsn.replace("://postgres@", "://postgres:s3cret@")
    assert "s3cret" in with_password  # trust authentication ignores it
    store = slot_store(with_password)
    assert store.take("k", 1.0, now=5.0) == (5.0, 0)
    assert "s3cret" not in store.ident
    assert store.ident.startswith("postgresql:127.0.0.1:")
