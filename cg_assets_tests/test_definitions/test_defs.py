import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from cg_assets.definitions import build_defs
from cg_assets.market.checks import CHECKS
from cg_assets.market.series import MARKET_ASSETS
from cg_assets.resources import CoinGlassResource, MissingApiKeyError
from cg_assets.settings import Settings


@pytest.fixture
def defs(settings: Settings) -> dg.Definitions:
    return build_defs(settings)


def test_definitions_load(defs: dg.Definitions):
    dg.Definitions.validate_loadable(defs)


def test_module_exposes_defs_lazily(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import cg_assets

    assert isinstance(cg_assets.defs, dg.Definitions)
    assert "defs" in dir(cg_assets)


# The product's lineage, written out: market -> liquidations -> heatmaps -> signals -> alerts,
# with what each partition reads of each input (at CG_INTERVAL=1h). A change to the graph must
# change this snapshot too, on purpose.
SAME_DAY = dg.TimeWindowPartitionMapping()
EVERY_DAY = dg.AllPartitionMapping()


def back(days: int) -> dg.TimeWindowPartitionMapping:
    """The day itself and the `days` days before it."""
    return dg.TimeWindowPartitionMapping(start_offset=-days)


# When each asset runs by declarative automation (None: a schedule, a sensor or by hand),
# spelled out by `spell`: a dropped or loosened condition fails the snapshot.
RECENT = "in_latest_time_window(lookback_timedelta=2 days, 0:00:00)"
# The outcomes read the day after their own: three recent days follow their inputs.
RECENT_3 = "in_latest_time_window(lookback_timedelta=3 days, 0:00:00)"
LATEST_DAY_MISSING = "any_deps((missing & in_latest_time_window & ~will_be_requested))"


def follows(ignore: str = "", latest_day_of: str = "", window: str = RECENT) -> str:
    skip = f'(ignore_selection=key:"{ignore}")' if ignore else ""
    needed = f'(allow_selection=key:"{latest_day_of}")' if latest_day_of else skip
    return (
        f"({window} & any_deps_updated{skip}.since(handled) & ~{LATEST_DAY_MISSING}{needed}"
        f" & ~any_deps_in_progress{skip} & ~in_progress)"
    )


# The digest also runs at HH:37, to decide digests held for a late input past their deadline.
DIGEST = (
    f"((any_deps((newly_updated & {RECENT}))"
    " | cron_tick_passed(cron_schedule=37 * * * *, cron_timezone=UTC)).since(handled)"
    f" & ~any_deps((in_progress & {RECENT})) & ~in_progress)"
)
# The scorecard over all history: once a day after the finalize, not while recent inputs run.
DAILY = (
    "(cron_tick_passed(cron_schedule=45 0 * * *, cron_timezone=UTC).since(handled)"
    f" & ~any_deps((in_progress & {RECENT})) & ~in_progress)"
)
# Dagster's own building blocks, named by their labels rather than spelled out.
DAGSTER_LABELS = {"any_deps_updated", "any_deps_in_progress", "in_progress", "handled"}


def spell(condition: dg.AutomationCondition) -> str:
    """The condition's structure as an expression, with its selections and windows."""
    label, name = condition.get_label(), condition.name
    parts = [spell(child) for child in condition.children]
    if label in DAGSTER_LABELS and name in ("AND", "OR"):
        return label
    if name.startswith("ANY_DEPS_MATCH"):
        inner = label if label in DAGSTER_LABELS else f"any_deps({parts[0]})"
        return inner + name.removeprefix("ANY_DEPS_MATCH")
    if name in ("AND", "OR"):
        return "(" + f" {'&' if name == 'AND' else '|'} ".join(parts) + ")"
    if name == "NOT":
        return f"~{parts[0]}"
    if name == "SINCE":
        return f"{parts[0]}.since({parts[1]})"
    assert not parts, f"no spelling for {name} with operands"
    return name


@dataclass(frozen=True)
class Node:
    group: str
    deps: dict[str, dg.PartitionMapping] = field(default_factory=dict)
    automation: str | None = None


SNAPSHOT_INPUTS = {a.name for a in MARKET_ASSETS} - {"funding_rate_weighted_ohlc"}
LINEAGE = {
    **{a.name: Node("market") for a in MARKET_ASSETS},
    "liquidation_orders": Node("liquidations"),
    "liquidation_heatmap": Node(
        "heatmaps", {"liquidation_orders": SAME_DAY, "price_ohlc": back(1)}
    ),
    "composite_heatmap": Node(
        "heatmaps",
        {"liquidation_heatmap": back(1), "open_interest_ohlc": back(1), "price_ohlc": back(4)},
        follows(latest_day_of="liquidation_heatmap"),
    ),
    "coinglass_liquidation_heatmap": Node("heatmaps"),
    "market_snapshot": Node("signals", dict.fromkeys(SNAPSHOT_INPUTS, back(2)), follows()),
    "signals": Node(
        "signals",
        {"market_snapshot": back(30), "composite_heatmap": back(1)},
        follows(ignore="composite_heatmap"),
    ),
    "signal_outcomes": Node(
        "signals",
        {
            "signals": SAME_DAY,
            # The forward window: a signal late on day D is followed into D+1.
            "price_ohlc": dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=1, allow_nonexistent_upstream_partitions=True
            ),
        },
        follows(latest_day_of="signals", window=RECENT_3),
    ),
    "signal_scorecard": Node(
        "signals",
        {"signal_outcomes": EVERY_DAY, "price_ohlc": EVERY_DAY, "market_snapshot": EVERY_DAY},
        DAILY,
    ),
    "telegram_alerts": Node("alerts", {"signals": EVERY_DAY, "market_snapshot": EVERY_DAY}, DIGEST),
    "liquidation_alerts": Node("alerts", {"liquidation_orders": EVERY_DAY}),
}
DOMAIN_CHECKS = {
    ("liquidation_orders", "schema"),
    ("liquidation_orders", "unique_event_id"),
    ("liquidation_orders", "valid_values"),
    ("liquidation_orders", "sidecar_fresh"),
    ("liquidation_heatmap", "schema"),
    ("liquidation_heatmap", "usd_conserved"),
    ("composite_heatmap", "schema"),
    ("composite_heatmap", "scores_in_range"),
    ("market_snapshot", "schema"),
    ("market_snapshot", "unique_key"),
    ("market_snapshot", "value_ranges"),
    ("market_snapshot", "nulls_explained"),
    ("signals", "schema"),
    ("signals", "unique_signal_id"),
    ("signals", "value_ranges"),
    ("signal_outcomes", "schema"),
    ("signal_outcomes", "unique_outcome"),
    ("signal_outcomes", "no_look_ahead"),
    ("signal_outcomes", "pending_is_null"),
    ("signal_scorecard", "schema"),
    ("signal_scorecard", "unique_cell"),
    ("signal_scorecard", "consistent"),
    ("telegram_alerts", "delivered"),
}


def test_asset_graph_is_the_product_lineage(defs: dg.Definitions):
    graph = defs.resolve_asset_graph()
    found = {
        k.to_user_string(): Node(
            graph.get(k).group_name or "",
            {
                p.to_user_string(): graph.get_partition_mapping(k, p)
                for p in graph.get(k).parent_keys
            },
            spell(condition) if (condition := graph.get(k).automation_condition) else None,
        )
        for k in graph.get_all_asset_keys()
    }
    assert found == LINEAGE
    for asset in MARKET_ASSETS:
        node = graph.get(dg.AssetKey(asset.name))
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [c.name for c in asset.columns]
        assert all(c.description for c in schema.columns)
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {(a.name, c) for a in MARKET_ASSETS for c in CHECKS} | DOMAIN_CHECKS


def test_a_backfill_from_the_start_date_has_every_input_it_needs(
    defs: dg.Definitions, settings: Settings
):
    """A lookback reaching before the start date maps to the days that exist: a mapping that
    required earlier days would fail every backfill of the first partitions. Only a declared
    forward window (the outcomes' next day of prices) reaches past the day itself."""
    graph = defs.resolve_asset_graph()
    first = settings.start_date.isoformat()
    forward = {("signal_outcomes", "price_ohlc"): [(settings.start_date + timedelta(days=1))]}
    for key in graph.get_all_asset_keys():
        if graph.get(key).partitions_def is None:
            continue
        for parent in graph.get(key).parent_keys:
            mapped = graph.get_parent_partition_keys_for_child(first, parent, key)
            later = forward.get((key.to_user_string(), parent.to_user_string()), [])
            assert not mapped.required_but_nonexistent_partition_keys, (key, parent)
            assert mapped.partitions_subset.get_partition_keys() == [
                first,
                *(d.isoformat() for d in later),
            ], (key, parent)


def eval_schedule(defs: dg.Definitions, name: str, at: datetime) -> list[dg.RunRequest] | str:
    schedule = defs.resolve_schedule_def(name)
    with dg.instance_for_test() as instance:
        result = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=at,
                repository_def=defs.get_repository_def(),
            )
        )
    if result.skip_message:
        return result.skip_message
    return list(result.run_requests or [])


def at(settings: Settings, days: int, hour: int, minute: int) -> datetime:
    day = settings.start_date + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def test_hourly_schedule_refreshes_today(defs: dg.Definitions, settings: Settings):
    moment = at(settings, 10, 10, 5)
    [request] = eval_schedule(defs, "market_hourly_refresh", moment)
    assert request.partition_key == moment.date().isoformat()
    assert request.run_key == f"refresh-{moment.date().isoformat()}T10"


def test_hourly_schedule_skips_before_the_first_bar_closes(
    defs: dg.Definitions, settings: Settings
):
    skip = eval_schedule(defs, "market_hourly_refresh", at(settings, 10, 0, 5))
    assert "no 60-minute bar of today has closed yet" in skip


def test_daily_schedule_finalizes_yesterday(defs: dg.Definitions, settings: Settings):
    [request] = eval_schedule(defs, "market_daily_finalize", at(settings, 10, 0, 20))
    yesterday = (settings.start_date + timedelta(days=9)).isoformat()
    assert request.partition_key == yesterday
    assert request.run_key == f"finalize-{yesterday}"


@pytest.mark.parametrize(("hour", "minute", "days"), [(10, 20, 10), (0, 10, 10), (0, 0, 9)])
def test_liquidation_heatmap_refresh_rebuilds_the_day_of_the_last_ten_minutes(
    defs: dg.Definitions, settings: Settings, hour: int, minute: int, days: int
):
    moment = at(settings, 10, hour, minute)
    [request] = eval_schedule(defs, "liquidation_heatmap_refresh", moment)
    assert request.partition_key == (settings.start_date + timedelta(days=days)).isoformat()
    assert request.run_key == f"liquidation-heatmap-{moment:%Y-%m-%dT%H:%M}"


def test_schedules_drive_the_roots_and_derived_assets_follow_by_automation(defs: dg.Definitions):
    """A schedule of a derived asset would run it at a clock time whether or not its inputs
    had landed; the liquidation heatmap is the one derived asset on a clock (its input lands
    every few seconds, see cg_assets.heatmaps.schedules)."""
    graph = defs.resolve_asset_graph()
    scheduled = {
        key.to_user_string()
        for schedule in defs.schedules or []
        for key in defs.resolve_job_def(schedule.job_name).asset_layer.executable_asset_keys
    }
    assert scheduled == {a.name for a in MARKET_ASSETS} | {
        "liquidation_heatmap",
        "coinglass_liquidation_heatmap",
    }
    for name in scheduled:
        assert graph.get(dg.AssetKey(name)).automation_condition is None, name


def test_missing_key_against_the_real_api_says_what_to_do():
    with pytest.raises(MissingApiKeyError) as info:
        CoinGlassResource().make_client()
    assert "CG_API_KEY" in str(info.value)
    assert "make demo" in str(info.value)


def test_loading_the_code_location_leaves_heavy_clients_unimported(env: dict[str, str]):
    """The code location loads in every Dagster process (webserver, daemon, each run); the
    Telegram client, matplotlib and pandas are imported only where they are used."""
    probe = (
        "import sys, cg_assets; cg_assets.defs;"
        "heavy = ('telegram', 'httpx', 'matplotlib', 'pandas');"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
