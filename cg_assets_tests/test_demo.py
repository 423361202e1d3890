"""What the demo backfills and which day it refreshes; the run itself is the e2e test's."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from cg_assets import demo

HOUR_MS = 3_600_000


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        ("2026-03-10T10:06", "2026-03-10"),
        ("2026-03-10T01:00", "2026-03-10"),  # the 00:00 bar has just closed
        ("2026-03-10T00:59", "2026-03-09"),  # the newest closed bar is yesterday's 23:00
    ],
)
def test_the_newest_day_is_the_day_of_the_last_closed_bar(moment: str, day: str):
    now = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    assert demo.newest_day(now, HOUR_MS) == date.fromisoformat(day)


def backfill_params(
    monkeypatch: pytest.MonkeyPatch, days: int, today: date | None = None
) -> dict[str, object]:
    sent: list[dict] = []

    def graphql(ui: str, query: str, variables: dict) -> dict:
        sent.append(variables["params"])
        return {
            "data": {
                "launchPartitionBackfill": {
                    "__typename": "LaunchBackfillSuccess",
                    "backfillId": "b1",
                }
            }
        }

    monkeypatch.setattr(demo, "graphql", graphql)
    assert demo.launch_backfill("http://ui", days, date(2026, 3, 10), today) == "b1"
    [params] = sent
    return {
        s["assetKey"]["path"][0]: s["partitions"] and s["partitions"]["range"]
        for s in params["partitionsByAssets"]
    }


def test_the_backfill_leaves_the_newest_days_market_chain_to_the_refresh(
    monkeypatch: pytest.MonkeyPatch,
):
    ranges = backfill_params(monkeypatch, 2)
    history = {"start": "2026-03-08", "end": "2026-03-09"}
    through_newest = {"start": "2026-03-08", "end": "2026-03-10"}
    for name in demo.REFRESHED:
        assert ranges[name] == history, name
    for name in ("liquidation_orders", "liquidation_heatmap", "composite_heatmap"):
        assert ranges[name] == through_newest, name
    assert ranges["coinglass_liquidation_heatmap"] is None
    assert ranges["signal_scorecard"] is None  # over all history, after the outcomes


def test_without_history_days_only_the_newest_day_is_backfilled(
    monkeypatch: pytest.MonkeyPatch,
):
    ranges = backfill_params(monkeypatch, 0)
    assert not demo.REFRESHED & set(ranges)
    assert ranges["liquidation_heatmap"] == {"start": "2026-03-10", "end": "2026-03-10"}


def test_in_the_first_bar_of_a_day_the_live_assets_run_through_today(
    monkeypatch: pytest.MonkeyPatch,
):
    """At 00:30 UTC the newest closed bar is yesterday's, but the live orders land today: the
    liquidation-fed assets must include today, the market chain stays with the refresh."""
    now = datetime(2026, 3, 11, 0, 30, tzinfo=UTC)
    newest = demo.newest_day(now, HOUR_MS)
    assert newest == date(2026, 3, 10)
    ranges = backfill_params(monkeypatch, 2, now.date())
    for name in ("liquidation_orders", "liquidation_heatmap", "composite_heatmap"):
        assert ranges[name] == {"start": "2026-03-08", "end": "2026-03-11"}, name
    for name in demo.REFRESHED:
        assert ranges[name] == {"start": "2026-03-08", "end": "2026-03-09"}, name
