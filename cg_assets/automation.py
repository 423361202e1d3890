"""When derived assets run: as soon as their inputs land, not at a clock time after them.

Only the roots keep cron schedules (the market refresh and finalize, the liquidation heatmap's
10-minute cadence, CoinGlass's model heatmap). Everything computed from them carries an
automation condition, evaluated every few seconds by `automation_sensor`, so a slow or retried
refresh delays its downstream instead of leaving it to evaluate stale inputs.

Why not `AutomationCondition.eager()`:
- eager() looks at the latest time partition only. The daily finalize rewrites *yesterday*
  (00:20 UTC, the last bars of the day), and the snapshot, signals and digest of yesterday's
  last bars must follow it; so the conditions here cover today's and yesterday's partitions.
- eager() waits while any mapped input partition is missing. With the declared lookbacks
  (signals read 30 days of snapshots) that would hold today's signals back until the whole
  history is backfilled, although the code reads what exists. Here only a missing input of
  the latest day holds a partition back: a snapshot of today without today's market data
  would be empty, so it waits for the first refresh of the day instead.
- eager() also runs a partition when it becomes missing, e.g. at midnight before any input of
  the new day exists. Here nothing runs unless an input was updated.

Idempotency: a partition is requested once per update of its inputs (since_last_handled), never
while it or an input is in progress, and every derived asset rewrites its partition (the digest
sends once per coin and bar through the alert ledger), so a repeated request costs a run, never
a duplicate row or message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

AC = dg.AutomationCondition
SENSOR = "automation_sensor"
# Today's and yesterday's daily partitions: the window ends with today's partition.
RECENT = timedelta(days=2)


def _latest_day_missing() -> dg.AutomationCondition:
    """On an input: its latest partition is missing and will not be requested this tick."""
    return (AC.missing() & AC.in_latest_time_window() & ~AC.will_be_requested()).with_label(
        "latest_day_missing"
    )


def follows_inputs(
    *,
    ignore: Sequence[str] = (),
    latest_day_of: Sequence[str] | None = None,
    window: timedelta = RECENT,
) -> dg.AutomationCondition:
    """A daily partition of today or yesterday runs once its inputs were updated.

    `ignore`: inputs read when present that neither trigger nor hold back a run.
    `latest_day_of`: the inputs whose latest (today's) partition must exist before today's
    partition runs (default: all inputs). Yesterday's partition needs no such check: the
    update that triggers it is yesterday's data landing. `window`: how many recent days
    follow their inputs (longer for an asset that reads days after its own partition).
    """
    updated = AC.any_deps_updated()
    in_progress = AC.any_deps_in_progress()
    missing = AC.any_deps_match(_latest_day_missing()).with_label("any_deps_latest_day_missing")
    if ignore:
        skipped = dg.AssetSelection.assets(*ignore)
        updated, in_progress, missing = (
            updated.ignore(skipped),
            in_progress.ignore(skipped),
            missing.ignore(skipped),
        )
    if latest_day_of is not None:
        missing = missing.allow(dg.AssetSelection.assets(*latest_day_of))
    return (
        AC.in_latest_time_window(window)
        & updated.since_last_handled()
        & ~missing
        & ~in_progress
        & ~AC.in_progress()
    ).with_label("follows_inputs")


def follows_recent_inputs(recheck_cron: str | None = None) -> dg.AutomationCondition:
    """An unpartitioned asset reading the newest days of its inputs runs once today's or
    yesterday's partition of an input was updated, and not while those are being rewritten.

    Older partitions are ignored: a backfill of history does not change the newest rows, and a
    long one must not hold the hourly digest back. `recheck_cron` also runs it at those ticks
    when nothing was updated: a decision that waits for a deadline (a digest held for a late
    input) must be taken again once the deadline passed, even if the input never lands.
    """
    recent = AC.in_latest_time_window(RECENT)
    updated = AC.any_deps_match(AC.newly_updated() & recent).with_label("any_recent_dep_updated")
    in_progress = AC.any_deps_match(AC.in_progress() & recent).with_label(
        "any_recent_dep_in_progress"
    )
    trigger = updated
    if recheck_cron is not None:
        trigger = updated | AC.cron_tick_passed(recheck_cron).with_label(f"recheck {recheck_cron}")
    return (trigger.since_last_handled() & ~in_progress & ~AC.in_progress()).with_label(
        "follows_recent_inputs"
    )


def refreshed_daily(cron: str) -> dg.AutomationCondition:
    """An unpartitioned summary over all history runs once a day, at the first evaluation
    after `cron` (set after the daily finalize, so it sees yesterday complete), and not while
    today's or yesterday's inputs are being rewritten; if they are, it runs once they are done.
    """
    recent = AC.in_latest_time_window(RECENT)
    in_progress = AC.any_deps_match(AC.in_progress() & recent).with_label(
        "any_recent_dep_in_progress"
    )
    return (
        AC.cron_tick_passed(cron).with_label(f"daily at {cron}").since_last_handled()
        & ~in_progress
        & ~AC.in_progress()
    ).with_label("refreshed_daily")


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """The sensor evaluating every asset's condition, on by default (a condition without a
    running sensor does nothing, and the UI would otherwise need a toggle per deployment)."""
    return dg.AutomationConditionSensorDefinition(
        SENSOR,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        # The daemon's loop floor; each hop of snapshot -> signals -> digest waits up to this.
        minimum_interval_seconds=5,
        description="Runs derived assets as soon as their inputs land (declarative automation).",
    )
