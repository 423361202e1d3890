"""Switchable failures of the CoinGlass REST simulator, set per instance or through
`POST /_sim/faults`: latency, 503s, errors in the body, truncated JSON and 429 storms.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_RATE_KNOBS = ("error_5xx_rate", "body_500_rate", "malformed_json_rate")


@dataclass
class Faults:
    """Switchable failures; rates draw from a seeded RNG so a test run is reproducible.

    `storm_429` counts down: the next N API requests get HTTP 429 whatever the usage.
    """

    latency_s: float = 0.0
    error_5xx_rate: float = 0.0
    body_500_rate: float = 0.0
    malformed_json_rate: float = 0.0
    storm_429: int = 0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def hit(self, rate: float) -> bool:
        """Whether this request suffers a fault of probability `rate` (no draw when it is 0)."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def take_storm(self) -> bool:
        with self._lock:
            if self.storm_429 <= 0:
                return False
            self.storm_429 -= 1
            return True

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several knobs at once, all or none; ValueError names a bad knob or value."""
        checked = {name: _check_knob(name, value) for name, value in values.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)
            if "seed" in checked:
                self._rng = random.Random(self.seed)

    def clear(self) -> None:
        """Switch every fault off (the RNG keeps its position)."""
        self.update({"latency_s": 0.0, **dict.fromkeys(_RATE_KNOBS, 0.0), "storm_429": 0})

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


def _check_knob(name: str, value: Any) -> float | int:
    knobs = [f.name for f in fields(Faults) if f.init]
    if name not in knobs:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(knobs)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name in ("storm_429", "seed"):
        if int(value) != value or (name == "storm_429" and value < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        return int(value)
    if name in _RATE_KNOBS and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)
