"""What the automation sensor requests as inputs land, tick by tick.

Materializations are reported to a test instance and the conditions evaluated with Dagster's
own evaluator at a fixed moment (ten days after the start date), so nothing depends on the
calendar or on a daemon's timing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from cg_assets.definitions import build_defs
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.settings import Settings

MARKET = [a.name for a in MARKET_ASSETS]


class Automation:
    """Ticks of the automation sensor over one instance, at a moment the test chooses."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, now: datetime) -> None:
        self.defs, self.instance, self.now = defs, instance, now
        self.cursor = None
        self.tick()  # the first evaluation only records the state it starts from

    def land(self, assets: Iterable[str], day: date | None) -> None:
        for asset in assets:
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(asset, partition=day.isoformat() if day else None)
            )

    def tick(self) -> dict[str, set[str | None]]:
        """What this tick requests: asset -> partition keys."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=self.now
        )
        self.cursor = result.cursor
        keys = self.defs.resolve_asset_graph().get_all_asset_keys()
        return {
            k.to_user_string(): set(parts)
            for k in keys
            if (parts := result.get_requested_partitions(k))
        }


@pytest.fixture
def today(settings: Settings) -> date:
    return settings.start_date + timedelta(days=10)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def at(day: date, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def test_the_hourly_refresh_runs_snapshot_and_signals_then_the_digest(
    settings: Settings, instance: dg.DagsterInstance, today: date
):
    auto = Automation(build_defs(settings), instance, at(today, 10, 6))
    auto.land(MARKET, today)
    # One run for the day: signals ride along with the snapshot they read (29 days of history
    # are missing and do not hold them back), and their outcomes with them; yesterday's
    # outcomes follow today's prices into their forward window. No composite without today's
    # liquidation heatmap.
    yesterday = (today - timedelta(days=1)).isoformat()
    assert auto.tick() == {
        "market_snapshot": {today.isoformat()},
        "signals": {today.isoformat()},
        "signal_outcomes": {today.isoformat(), yesterday},
    }
    assert auto.tick() == {}
    auto.land(["market_snapshot", "signals", "signal_outcomes"], today)
    assert auto.tick() == {"telegram_alerts": {None}}
    assert auto.tick() == {}


def test_yesterdays_finalize_flows_into_yesterday_and_today(
    settings: Settings, instance: dg.DagsterInstance, today: date
):
    yesterday = today - timedelta(days=1)
    auto = Automation(build_defs(settings), instance, at(today, 10, 6))
    auto.land(MARKET, today)
    auto.tick()
    auto.land(["market_snapshot", "signals", "signal_outcomes"], today)
    auto.tick()
    auto.land(MARKET, yesterday)
    both = {yesterday.isoformat(), today.isoformat()}
    # Today's partitions read yesterday too. Yesterday's composite places its windows with the
    # final prices; today's waits for today's liquidation heatmap.
    # The outcomes of the day before yesterday see yesterday's final prices in their window.
    assert auto.tick() == {
        "market_snapshot": both,
        "signals": both,
        "signal_outcomes": {*both, (today - timedelta(days=2)).isoformat()},
        "composite_heatmap": {yesterday.isoformat()},
    }


def test_after_midnight_only_yesterday_runs_until_today_has_market_data(
    settings: Settings, instance: dg.DagsterInstance, today: date
):
    yesterday = today - timedelta(days=1)
    auto = Automation(build_defs(settings), instance, at(today, 0, 21))
    auto.land(MARKET, yesterday)
    # The finalize also completes the 24 h outcomes of the day before yesterday's last signals.
    assert auto.tick() == {
        "market_snapshot": {yesterday.isoformat()},
        "signals": {yesterday.isoformat()},
        "signal_outcomes": {yesterday.isoformat(), (today - timedelta(days=2)).isoformat()},
        "composite_heatmap": {yesterday.isoformat()},
    }
    auto.land(["market_snapshot", "signals", "signal_outcomes"], yesterday)
    assert auto.tick() == {"telegram_alerts": {None}}
    # The first refresh of today releases today's snapshot, held since the finalize.
    auto.land(MARKET, today)
    assert auto.tick() == {
        "market_snapshot": {today.isoformat()},
        "signals": {today.isoformat()},
        "signal_outcomes": {today.isoformat(), yesterday.isoformat()},
    }


def test_the_composite_follows_the_liquidation_heatmap_but_signals_ignore_it(
    settings: Settings, instance: dg.DagsterInstance, today: date
):
    auto = Automation(build_defs(settings), instance, at(today, 0, 30))
    # Before the day's first bar closes there are no prices of today: yesterday's serve.
    auto.land(["liquidation_heatmap"], today)
    assert auto.tick() == {"composite_heatmap": {today.isoformat()}}
    auto.land(["composite_heatmap"], today)
    assert auto.tick() == {}


def test_a_history_backfill_reruns_the_recent_days_reading_it_but_not_the_digest(
    settings: Settings, instance: dg.DagsterInstance, today: date
):
    old = today - timedelta(days=5)
    auto = Automation(build_defs(settings), instance, at(today, 10, 6))
    auto.land(MARKET, old)
    auto.land(["market_snapshot", "signals"], old)
    # Yesterday's signals read 30 days of snapshots (their outcomes follow them) and its
    # composite 4 days of prices; the snapshot of the last two days reads 2 days of market
    # data, so not this one. Today's partitions wait for today's inputs. The digest reads only
    # the newest rows, the scorecard waits for its daily tick.
    assert auto.tick() == {
        "signals": {(today - timedelta(days=1)).isoformat()},
        "signal_outcomes": {(today - timedelta(days=1)).isoformat()},
        "composite_heatmap": {(today - timedelta(days=1)).isoformat()},
    }


def test_the_scorecard_refreshes_once_a_day_after_the_finalize(
    settings: Settings, instance: dg.DagsterInstance, today: date
):
    yesterday = today - timedelta(days=1)
    auto = Automation(build_defs(settings), instance, at(today, 0, 40))
    auto.land(["signal_outcomes"], yesterday)
    assert "signal_scorecard" not in auto.tick()  # an input update alone does not run it
    auto.now = at(today, 0, 46)
    assert auto.tick() == {"signal_scorecard": {None}}
    assert auto.tick() == {}
    auto.now = at(today, 13, 0)
    auto.land(["signal_outcomes"], today)
    assert "signal_scorecard" not in auto.tick()


def test_the_sensor_runs_by_default_and_often(settings: Settings):
    sensor = build_defs(settings).resolve_sensor_def("automation_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 5
