"""The scorecard's pipeline on synthetic frames: the simulator's hourly bars, the real rules,
outcomes and scorecard, without Dagster or a lake, so many seeds run in seconds.

The frames hold what every rule but the heatmap zone reads, at coin level: funding close, OI
and its change over the bar, long and short liquidations, retail and top-trader long shares,
taker buy share, price. There is no composite heatmap, so the zone rule is skipped, as the
engine skips a rule whose input is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from cg_assets.coinglass.plans import DAY_MS, HOUR_MS
from cg_assets.signals.backtest import HORIZONS, PriceBars
from cg_assets.signals.outcomes import outcomes_table
from cg_assets.signals.rules import Snapshot, Thresholds, evaluate
from cg_assets.signals.scorecard import compute_scorecard
from cg_assets.sim.grid import MinuteGrid
from cg_assets.sim.market import DEFAULT_EPOCH_MS
from cg_assets.sim.scenarios import Scenario
from cg_assets.telegram.ledger import Policy

START_MS = DEFAULT_EPOCH_MS + 10 * DAY_MS
FIELDS = (
    "close",
    "funding",
    "oi",
    "liq_long",
    "liq_short",
    "global_long",
    "top_account_long",
    "top_position_long",
    "volume",
    "buy",
)


@dataclass(frozen=True)
class Frames:
    bars: dict[str, PriceBars]
    snapshots: list[Snapshot]


def hourly_frames(
    seed: int, coins: Sequence[str], days: int, scenario: Scenario | None = None
) -> Frames:
    grid = MinuteGrid(seed, DEFAULT_EPOCH_MS, scenario)
    end = START_MS + days * DAY_MS
    bars, snapshots = {}, []
    for coin in coins:
        b = grid.bars(coin, HOUR_MS, START_MS, end, end, FIELDS)
        v = b.v
        oi_change = (v["oi.close"] / v["oi.open"] - 1) * 100
        taker = v["buy"] / v["volume"] * 100
        bars[coin] = PriceBars(
            b.time,
            v["close.open"],
            v["close.high"],
            v["close.low"],
            v["close.close"],
            interval_ms=HOUR_MS,
        )
        snapshots += [
            Snapshot(
                ts=datetime.fromtimestamp(int(t) / 1000, UTC),
                symbol=coin,
                funding_avg_8h_pct=float(v["funding.close"][i]),
                oi_usd=float(v["oi.close"][i]),
                oi_change_1_pct=float(oi_change[i]),
                long_liq_usd=float(v["liq_long"][i]),
                short_liq_usd=float(v["liq_short"][i]),
                retail_long_pct=float(v["global_long"][i]),
                top_account_long_pct=float(v["top_account_long"][i]),
                top_position_long_pct=float(v["top_position_long"][i]),
                taker_buy_share_pct=float(taker[i]),
                price=float(v["close.close"][i]),
            )
            for i, t in enumerate(b.time)
        ]
    return Frames(bars, snapshots)


def signal_rows(snapshots: Sequence[Snapshot], t: Thresholds) -> list[dict]:
    """The rules over each snapshot, confluence included (the coin's signals of the bar)."""
    return [s.to_row() for snap in snapshots for s in evaluate(snap, t, zones=None)]


def scorecard(
    signals: Sequence[dict],
    bars: dict[str, PriceBars],
    policy: Policy | None = None,
    seed: int = 1,
) -> pa.Table:
    """The scorecard of `signals` against `bars`, through the assets' own functions."""
    outcomes = outcomes_table(signals, bars, HORIZONS)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("signal_outcomes", outcomes)
        as_of = datetime.fromtimestamp(START_MS / 1000, UTC)
        return compute_scorecard(con, bars, HORIZONS, policy or Policy(), as_of, seed)
    finally:
        con.close()
