"""`telegram_alerts` end to end: lake rows in, digests out through the stand-in, ledger kept.

The upstream `market_snapshot` and `signals` days are written by hand in the contract's
shape, so these tests do not depend on the signal assets' code.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta

import dagster as dg
import pytest

from cg_assets.alerts import build_alert_defs
from cg_assets.alerts.assets import (
    INPUTS_DEADLINE,
    RECHECK_CRON,
    digest_bar,
    digest_key,
    stale_reason,
)
from cg_assets.definitions import build_resources
from cg_assets.market.schedules import HOURLY_REFRESH_CRON
from cg_assets.resources.telegram import build_telegram_resource, parse_enabled
from cg_assets.settings import Settings
from cg_assets.signals.snapshot import HOUR_MS
from cg_assets.sim import TelegramServer
from cg_assets.telegram.ledger import AlertLedger
from cg_assets_tests.test_alerts.conftest import (
    BAR,
    CHAT,
    START,
    TOKEN,
    ledger_file,
    metadata,
    resource,
    run_alerts,
    write_bar,
)

FUNDING = ("funding", "HIGH", "Funding +0.12% per 8h: longs crowded")
TAKER = ("taker_flow", "MEDIUM", "Takers buying: 67% of volume")
RETAIL = ("retail_positioning", "LOW", "Retail 61% long")
OI = ("oi_change", "HIGH", "OI +5.4% in 1h")


def ledger(settings) -> AlertLedger:
    return AlertLedger(ledger_file(settings))


def test_one_digest_per_coin_and_nothing_twice_for_the_same_bar(
    settings, lake, telegram, clock, instance
):
    write_bar(lake, BAR, {"BTC": [FUNDING, TAKER], "ETH": [OI]})
    result = run_alerts(settings, resource(telegram), clock, instance)
    assert result.success
    meta = metadata(result)
    assert (meta["sent"], meta["suppressed"], meta["failed"], meta["skipped"]) == (2, 0, 0, 0)
    btc, eth = telegram.messages()
    assert btc.plain.startswith("🔴 BTC · 1 HIGH · 1 MEDIUM")
    assert "Funding +0.12% per 8h: longs crowded" in btc.plain
    assert "Takers buying: 67% of volume" in btc.plain
    assert eth.plain.startswith("🔴 ETH · 1 HIGH")
    assert meta["preview"] == btc.text
    assert meta["bars"] == {"BTC": BAR.isoformat(), "ETH": BAR.isoformat()}
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    records = ledger(settings).records(status="sent")
    assert [(r.key, r.message_id) for r in records] == [
        ("digest:BTC:2026-03-01T11:00Z", 1),
        ("digest:ETH:2026-03-01T11:00Z", 2),
    ]
    again = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert (again["sent"], again["skipped"]) == (0, 2)
    assert len(telegram.messages()) == 2


def test_dedup_and_each_cooldown_across_runs(settings, lake, telegram, clock, instance):
    def evaluate(minutes_later: float, new_bar_hour: int | None = None) -> dict:
        clock.advance(minutes_later)
        if new_bar_hour is not None:
            write_bar(lake, BAR.replace(hour=new_bar_hour), {"BTC": [FUNDING, TAKER, RETAIL]})
        return metadata(run_alerts(settings, resource(telegram), clock, instance))

    assert evaluate(0, new_bar_hour=11)["sent"] == 1  # 12:05, all three rules
    held = evaluate(3, new_bar_hour=12)  # 12:08: a new bar, but every rule went out 3 min ago
    assert (held["sent"], held["suppressed"]) == (0, 1)
    assert "funding: duplicate, alerted 3 min ago" in held["outcomes"]
    assert evaluate(28)["sent"] == 1  # 12:36, same bar: HIGH's 30 minutes are over, not the rest
    assert evaluate(30, new_bar_hour=13)["sent"] == 1  # 13:06: HIGH again, MEDIUM after 61 min
    assert evaluate(300, new_bar_hour=18)["sent"] == 1  # 18:06: LOW's 6 hours are over
    rules = [
        [line[2:] for line in m.plain.splitlines() if line.startswith("• ")]
        for m in telegram.messages()
    ]
    assert rules == [
        [FUNDING[2], TAKER[2], RETAIL[2]],
        [FUNDING[2]],
        [FUNDING[2], TAKER[2]],
        [FUNDING[2], TAKER[2], RETAIL[2]],
    ]
    second = telegram.messages()[1].plain
    assert "Also active, alerted earlier: retail_positioning, taker_flow" in second


def test_no_token_records_every_alert_as_suppressed(settings, lake, telegram, clock, instance):
    write_bar(lake, BAR, {"BTC": [FUNDING], "ETH": [OI]})
    result = run_alerts(settings, resource(telegram, bot_token=None), clock, instance)
    assert result.success
    meta = metadata(result)
    assert (meta["sent"], meta["suppressed"]) == (0, 2)
    records = ledger(settings).records()
    assert [(r.status, r.error) for r in records] == [
        ("suppressed", "suppressed: no TELEGRAM_BOT_TOKEN"),
    ] * 2
    assert "Funding +0.12% per 8h" in records[0].text  # what would have been sent
    assert sum(telegram.requests.values()) == 0


def test_kill_switch_suppresses_with_its_reason(settings, lake, telegram, clock, instance):
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    off = build_telegram_resource(settings, {"ALERTS_ENABLED": "false"})
    assert off.alerts_enabled is False
    meta = metadata(run_alerts(settings, resource(telegram, alerts_enabled=False), clock, instance))
    assert meta["suppressed"] == 1
    [record] = ledger(settings).records()
    assert record.error == "suppressed: alerts disabled (ALERTS_ENABLED=false)"
    assert sum(telegram.requests.values()) == 0
    # Switching alerts back on sends the same evaluation: suppressed alerts hold nothing back.
    assert metadata(run_alerts(settings, resource(telegram), clock, instance))["sent"] == 1


def test_stale_inputs_are_suppressed_with_a_logged_reason(
    settings, lake, telegram, clock, instance
):
    write_bar(lake, BAR - timedelta(hours=1, minutes=15), {"BTC": [FUNDING]})  # refresh stopped
    write_bar(lake, BAR, {"ETH": [OI]})
    result = run_alerts(settings, resource(telegram), clock, instance)
    warnings = [
        r.user_message
        for r in instance.all_logs(result.run_id)
        if r.level == logging.WARNING and "stale inputs" in r.user_message
    ]
    meta = metadata(result)
    assert (meta["sent"], meta["suppressed"]) == (1, 1)
    reason = (
        "suppressed: stale inputs: bar 2026-03-01 09:45 UTC is 2.3 h old at"
        " 12:05 UTC (limit 2 bars, 2.0 h)"
    )
    assert ledger(settings).get("digest:BTC:2026-03-01T09:45Z").error == reason
    assert len(warnings) == 1
    assert reason in warnings[0]
    assert [m.plain.split()[1] for m in telegram.messages()] == ["ETH"]


def test_a_bar_lacking_inputs_is_held_then_alerted_once_when_they_land(
    settings, lake, telegram, clock, instance
):
    """12:05: the 11:00 bar has no liquidation_history or taker_volume row yet; its digest is
    held, not recorded. 12:12: the refresh landed and the signals were rebuilt: it goes out,
    once, without a warning about inputs."""
    absent = ["liquidation_history", "taker_volume"]
    write_bar(lake, BAR, {"BTC": [FUNDING]}, absent_inputs=absent, long_liq_usd=None)
    result = run_alerts(settings, resource(telegram), clock, instance)
    meta = metadata(result)
    assert (meta["sent"], meta["suppressed"], meta["held"]) == (0, 0, 1)
    reason = (
        "held: no liquidation_history, taker_volume bar at 2026-03-01 11:00 UTC yet; waiting"
        " until 12:30 UTC, then sent naming what is missing"
    )
    assert f"| BTC | held |  | {reason} |" in meta["outcomes"]
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    assert ledger(settings).records() == []
    assert telegram.messages() == []

    clock.advance(7)
    write_bar(lake, BAR, {"BTC": [FUNDING, TAKER]})
    assert metadata(run_alerts(settings, resource(telegram), clock, instance))["sent"] == 1
    assert metadata(run_alerts(settings, resource(telegram), clock, instance))["skipped"] == 1
    [message] = telegram.messages()
    assert "Takers buying: 67% of volume" in message.plain
    assert "Sent without" not in message.plain
    assert ledger(settings).get("digest:BTC:2026-03-01T11:00Z").status == "sent"


def test_after_the_deadline_the_digest_names_what_it_went_without(
    settings, lake, telegram, clock, instance
):
    write_bar(lake, BAR, {"BTC": [FUNDING]}, absent_inputs=["taker_volume"])
    clock.now = (BAR + timedelta(hours=1, minutes=29)).timestamp()
    assert metadata(run_alerts(settings, resource(telegram), clock, instance))["held"] == 1
    clock.advance(1)  # 12:30, the deadline
    meta = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert (meta["sent"], meta["held"]) == (1, 0)
    [message] = telegram.messages()
    assert "⚠️ Sent without taker_volume (not in the lake for this bar)" in message.plain


def test_the_recheck_decides_a_held_digest_within_the_hour():
    """For an hourly bar: the first evaluation (after the HH:05 market refresh) is before the
    deadline, the recheck after it and still within the stale limit, so every held digest is
    decided."""
    closed = BAR + timedelta(hours=1)
    first = closed.replace(minute=int(HOURLY_REFRESH_CRON.split()[0]))
    recheck = closed.replace(minute=int(RECHECK_CRON.split()[0]))
    assert first < closed + INPUTS_DEADLINE <= recheck
    assert stale_reason({"ts": BAR}, recheck, HOUR_MS, 2.0) == ""


def test_just_inside_two_bars_is_fresh(settings, lake, telegram, clock, instance):
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    clock.now = (BAR + timedelta(hours=2)).timestamp()  # exactly 2 bars old
    assert metadata(run_alerts(settings, resource(telegram), clock, instance))["sent"] == 1


def test_failures_fail_the_check_not_the_run(settings, lake, telegram, clock, instance):
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    result = run_alerts(settings, resource(telegram, chat_id="31337"), clock, instance)
    assert result.success
    assert metadata(result)["failed"] == 1
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "chat 31337 not found: check TELEGRAM_CHAT_ID" in check.description
    assert ledger(settings).records()[0].status == "failed"


def test_nothing_to_do_without_upstream_data(settings, telegram, clock, instance):
    result = run_alerts(settings, resource(telegram), clock, instance)
    assert result.success
    meta = metadata(result)
    assert (meta["coins_evaluated"], meta["sent"], meta["outcomes"]) == (
        0,
        0,
        "no signals on the newest bars",
    )
    assert sum(telegram.requests.values()) == 0


def test_the_token_never_leaks_from_runs_or_the_ledger(
    env, lake, clock, instance, caplog, monkeypatch: pytest.MonkeyPatch
):
    """A secret token through EnvVar, a 429, a chat error and then a rejected token (PTB's
    InvalidToken quotes it): none of logs, events, run, metadata or ledger hold it."""
    secret = "555666777:AAH-top-secret-bot-token"
    caplog.set_level(logging.DEBUG)
    texts = []
    with TelegramServer(tokens=[secret], chats=[CHAT]) as tg:
        settings = Settings.from_env({**env, "TELEGRAM_API_BASE_URL": tg.base_url})
        write_bar(lake, BAR, {"BTC": [FUNDING], "ETH": [OI]})
        monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
        for token, faults in ((secret, {"flood": 1, "chat_not_found": 1}), ("1:" + secret, {})):
            tg.faults.update(faults)
            monkeypatch.setenv("TELEGRAM_BOT_TOKEN", token)
            result = run_alerts(settings, build_telegram_resource(settings), clock, instance)
            texts += [repr(r) for r in instance.all_logs(result.run_id)]
            texts.append(repr(instance.get_run_by_id(result.run_id)))
            texts.append(repr(metadata(result)))
            clock.advance(10)
        assert len(tg.messages()) == 1  # ETH after a 429; BTC failed twice
    records = ledger(settings).records()
    assert [r.status for r in records] == ["failed", "sent"]
    assert "TELEGRAM_BOT_TOKEN" in records[0].error  # the error names the setting...
    with sqlite3.connect(ledger_file(settings)) as con:
        texts.append("\n".join(con.iterdump()))
    for path in ledger_file(settings).parent.iterdir():
        texts.append(path.read_bytes().decode(errors="replace"))
    captured = "\n".join(texts) + caplog.text
    assert secret not in captured  # ...never its value
    assert secret.split(":")[1] not in captured


def test_definitions_wire_the_asset_and_the_resource(settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.delenv("TELEGRAM_CHAT_ID", raising=False)
    defs = dg.Definitions.merge(
        build_alert_defs(settings), dg.Definitions(resources=build_resources(settings))
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("telegram_alerts"))
    assert node.group_name == "alerts"
    assert {k.to_user_string() for k in node.parent_keys} == {"signals", "market_snapshot"}
    telegram = build_telegram_resource(settings)
    assert isinstance(telegram.bot_token, dg.EnvVar)  # the value is resolved at launch
    assert telegram.chat_id is None
    assert telegram.gate() == "suppressed: no TELEGRAM_CHAT_ID"


def test_a_state_dsn_moves_the_ledger_to_postgresql_and_is_never_shown(
    env, lake, telegram, clock, instance, postgres_dsn, monkeypatch: pytest.MonkeyPatch
):
    """CG_STATE_DSN, as a deployment sets it: the run keeps its ledger there (no SQLite file
    appears), and its password (trust authentication ignores it) is in no config, log or
    metadata."""
    password = "s3cret-state-pw"
    monkeypatch.setenv("CG_STATE_DSN", postgres_dsn.replace("@", f":{password}@", 1))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
    settings = Settings.from_env({**env, "TELEGRAM_API_BASE_URL": telegram.base_url})
    resource_ = build_telegram_resource(settings)
    assert isinstance(resource_.ledger_location, dg.EnvVar)  # resolved at launch, not shown
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    result = run_alerts(settings, resource_, clock, instance)
    assert result.success
    assert [(r.coin, r.status) for r in AlertLedger(postgres_dsn).records()] == [("BTC", "sent")]
    assert not ledger_file(settings).exists()
    shown = [repr(r) for r in instance.all_logs(result.run_id)]
    shown += [repr(instance.get_run_by_id(result.run_id)), repr(metadata(result))]
    assert password not in "\n".join(shown)


@pytest.mark.parametrize(
    ("raw", "enabled"), [("", True), ("true", True), ("1", True), ("Off", False), ("no", False)]
)
def test_alerts_enabled_values(raw, enabled):
    assert parse_enabled(raw) is enabled


def test_a_bad_alerts_enabled_value_names_the_variable(settings):
    with pytest.raises(ValueError, match=r"ALERTS_ENABLED='maybe': expected true or false"):
        build_telegram_resource(settings, {"ALERTS_ENABLED": "maybe"})


def test_evaluation_time_is_the_clock(settings, lake, telegram, clock, instance):
    """A run long after the bar suppresses it as stale: the clock, not the bar, is "now"."""
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    clock.now = (START + timedelta(days=1)).timestamp()
    assert (
        metadata(run_alerts(settings, resource(telegram), clock, instance))["coins_evaluated"] == 1
    )
    assert "stale inputs" in ledger(settings).records()[0].error


def test_dedup_and_cooldowns_come_from_the_environment(settings):
    tuned = build_telegram_resource(
        settings, {"ALERT_DEDUP_MINUTES": "0", "ALERT_COOLDOWN_HIGH_MINUTES": "2.5"}
    )
    policy = tuned.policy()
    assert policy.dedup_s == 0
    assert policy.cooldown_s == {"HIGH": 150, "MEDIUM": 3600, "LOW": 21600}
    with pytest.raises(ValueError, match="ALERT_COOLDOWN_LOW_MINUTES='-1': expected a number"):
        build_telegram_resource(settings, {"ALERT_COOLDOWN_LOW_MINUTES": "-1"})


def test_a_digest_telegram_could_not_take_is_sent_by_the_next_evaluations(
    settings, lake, telegram, clock, instance
):
    """Telegram down at 12:05 (every retry a 5xx): the 13:05 evaluation, on a newer bar
    without signals, sends the 11:00 digest, judged fresh as of 12:05 when it was decided. A
    digest still undelivered after `stale_after_bars` bars is no longer retried."""
    write_bar(lake, BAR, {"BTC": [FUNDING], "ETH": [OI]})
    telegram.faults.update({"server_error": 100})
    down = metadata(
        run_alerts(settings, resource(telegram, max_attempts=2), clock, instance, retries=0)
    )
    assert (down["failed"], down["sent"]) == (2, 0)
    telegram.faults.update({"server_error": 1})  # BTC's retry fails once more, ETH's goes out
    clock.advance(60)
    write_bar(lake, BAR + timedelta(hours=1), {"BTC": [], "ETH": []})
    back = metadata(
        run_alerts(settings, resource(telegram, max_attempts=1), clock, instance, retries=0)
    )
    assert back["owed"] == ["digest:BTC:2026-03-01T11:00Z", "digest:ETH:2026-03-01T11:00Z"]
    assert (back["sent"], back["failed"]) == (1, 1)
    [eth] = telegram.messages()
    assert eth.plain.startswith("🔴 ETH · 1 HIGH\n1h bar 2026-03-01 11:00 UTC")
    clock.advance(61)  # 14:06: more than 2 bars after BTC's digest was decided
    late = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert (late["owed"], late["sent"]) == ([], 0)
    assert ledger(settings).get("digest:BTC:2026-03-01T11:00Z").status == "failed"


def test_a_digest_refused_by_a_flood_storm_is_sent_by_a_retry_of_the_step(
    settings, lake, telegram, clock, instance
):
    """Found by the soak: Telegram's flood control outlasting one try's attempts left the
    newest bar's digest `failed` in a successful run, and nothing evaluated it again before
    the hourly recheck. The step now re-runs itself, and the retry re-claims the digest."""
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    telegram.faults.update({"flood": 3, "retry_after": 1})
    result = run_alerts(settings, resource(telegram, max_attempts=2), clock, instance)
    assert result.success
    assert telegram.requests["sendMessage"] == 4  # two tries refused, then the one that went
    [digest] = telegram.messages()
    assert digest.plain.startswith("🔴 BTC · 1 HIGH")
    assert (metadata(result)["sent"], metadata(result)["failed"]) == (1, 0)
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    retried = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retried) == 1
    assert ledger(settings).get("digest:BTC:2026-03-01T11:00Z").status == "sent"


def test_after_its_last_retry_a_refused_digest_stays_owed_and_the_run_succeeds(
    settings, lake, telegram, clock, instance
):
    write_bar(lake, BAR, {"BTC": [FUNDING]})
    telegram.faults.update({"flood": 100, "retry_after": 1})
    result = run_alerts(settings, resource(telegram, max_attempts=1), clock, instance, retries=2)
    assert result.success
    assert telegram.requests["sendMessage"] == 3  # the first try and two retries, one each
    assert metadata(result)["failed"] == 1
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    [owed] = ledger(settings).undelivered("digest:", clock() - 3600)
    assert owed.key == "digest:BTC:2026-03-01T11:00Z"


@pytest.mark.parametrize(
    ("coin", "ts"), [("BTC", START), ("1000PEPE", BAR), ("ETH", START + timedelta(days=400))]
)
def test_digest_keys_name_their_bar(coin, ts):
    assert digest_bar(digest_key(coin, ts)) == (coin, ts)


@pytest.mark.parametrize("key", ["headsup:BTC:1", "digest:BTC", "digest::2026-03-01T11:00Z"])
def test_a_key_of_another_shape_is_named(key):
    with pytest.raises(ValueError, match=f"key='{key}': expected digest:COIN:YYYY-MM-DDTHH:MMZ"):
        digest_bar(key)
