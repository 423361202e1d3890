"""Alert hygiene end to end: all clears, the daily cap and the heartbeat, through the ledger and
python-telegram-bot against the Telegram stand-in. Lake rows are written by hand in the
contract's shape; time moves through the injected clock."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import time, timedelta

import dagster as dg

from cg_assets.alerts.definitions import build_alert_defs
from cg_assets.alerts.heartbeat import JOB, SCHEDULE, build_heartbeat_defs
from cg_assets.alerts.keys import all_clear_key
from cg_assets.resources import TelegramResource
from cg_assets.settings import Settings
from cg_assets.sim import TelegramServer
from cg_assets.telegram.ledger import AlertLedger, SignalRef
from cg_assets_tests.test_alerts.conftest import (
    BAR,
    START,
    Clock,
    ledger_file,
    metadata,
    resource,
    run_alerts,
    write_bar,
)

HOUR = timedelta(hours=1)


def funding(level: str, value: float) -> tuple[str, ...]:
    """A funding signal with the evidence the rule records (HIGH cut 0.10 %)."""
    evidence = {"metric": "funding", "value": value, "cuts": {"HIGH": 0.10, "MEDIUM": 0.06}}
    title = f"Funding {value:+.4f}% per 8h"
    return ("funding", level, title, json.dumps(evidence))


def evaluate(settings, lake, telegram, clock, instance, hour: int, **fired) -> dict:
    """Write the bar `hour` hours after BAR, evaluate it five minutes after it closed."""
    ts = BAR + hour * HOUR
    value = fired.pop("value")
    write_bar(lake, ts, {"BTC": fired.get("signals", [])}, funding_avg_8h_pct=value)
    clock.now = (ts + HOUR + timedelta(minutes=5)).timestamp()
    return metadata(run_alerts(settings, resource(telegram), clock, instance))


def test_a_flip_flopping_high_gets_one_all_clear_replying_to_its_first_alert(
    settings, lake, telegram, clock, instance
):
    """Funding crosses its HIGH cut three times in four hours; the dips in between stay above
    the exit (80 % of the cut) or last a single bar, so nothing is cleared until it has stayed
    at or below 0.08 % for two bars in a row: one all clear, a reply to the first HIGH alert."""
    series = [
        (0.12, [funding("HIGH", 0.12)]),
        (0.09, [funding("MEDIUM", 0.09)]),  # below the cut, above the exit
        (0.11, [funding("HIGH", 0.11)]),
        (0.07, [funding("MEDIUM", 0.07)]),  # at or below the exit: one bar
        (0.13, [funding("HIGH", 0.13)]),
        (0.05, []),
    ]
    for hour, (value, signals) in enumerate(series):
        meta = evaluate(
            settings, lake, telegram, clock, instance, hour, value=value, signals=signals
        )
        assert meta["all_clear_sent"] == 0, f"an all clear at hour {hour}"
    digests = telegram.messages()
    assert len(digests) == 5  # one per bar with a signal: nothing but digests so far
    meta = evaluate(settings, lake, telegram, clock, instance, 6, value=0.04, signals=[])
    assert meta["all_clear_sent"] == 1
    clear = telegram.messages()[-1]
    assert clear.reply_to == digests[0].message_id
    assert clear.plain.splitlines() == [
        "✅ BTC · funding all clear",
        "HIGH 2026-03-01 11:00 to 15:00 UTC (3 HIGH bars) has ended:",
        "funding 0.040%, at or below the exit 0.080% for 2 bars (to the 17:00 UTC bar)",
    ]
    key = all_clear_key("BTC", "funding", BAR + 4 * HOUR)
    record = AlertLedger(ledger_file(settings)).get(key)
    assert (record.status, record.reply_to) == ("sent", digests[0].message_id)
    # The next evaluations see the same ended episode: it was told once.
    clock.advance(32)
    again = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert again["all_clears"] == {key: "skipped"}
    assert len(telegram.messages()) == 6


def test_no_all_clear_for_a_high_nobody_was_told_about_or_when_switched_off(
    settings, lake, telegram, clock, instance
):
    write_bar(lake, BAR, {"BTC": [funding("HIGH", 0.12)]}, funding_avg_8h_pct=0.12)
    run_alerts(settings, resource(telegram, alerts_enabled=False), clock, instance)
    for hour in (1, 2):
        write_bar(lake, BAR + hour * HOUR, {"BTC": []}, funding_avg_8h_pct=0.01)
    clock.now = (BAR + 3 * HOUR + timedelta(minutes=5)).timestamp()
    meta = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert (meta["all_clear_sent"], meta["all_clears"]) == (0, {})
    assert telegram.messages() == []

    write_bar(lake, BAR + 3 * HOUR, {"BTC": [funding("HIGH", 0.12)]}, funding_avg_8h_pct=0.12)
    clock.now = (BAR + 4 * HOUR + timedelta(minutes=5)).timestamp()
    run_alerts(settings, resource(telegram), clock, instance)
    for hour in (4, 5):
        write_bar(lake, BAR + hour * HOUR, {"BTC": []}, funding_avg_8h_pct=0.01)
    clock.now = (BAR + 6 * HOUR + timedelta(minutes=5)).timestamp()
    off = metadata(run_alerts(settings, resource(telegram, all_clear=False), clock, instance))
    assert off["all_clears"] == {}
    assert len(telegram.messages()) == 1  # the HIGH digest only
    on = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert on["all_clear_sent"] == 1
    assert telegram.messages()[-1].reply_to == telegram.messages()[0].message_id


def test_an_all_clear_whose_claim_died_with_its_process_is_sent_by_the_next_run(
    settings, lake, telegram, clock, instance
):
    """A run claimed the all clear and was killed before sending (a process that exits
    without recording anything): the next evaluation takes the claim back and sends it once,
    and one refused by Telegram is retried the same way."""
    write_bar(lake, BAR, {"BTC": [funding("HIGH", 0.12)]}, funding_avg_8h_pct=0.12)
    run_alerts(settings, resource(telegram), clock, instance)
    for hour in (1, 2):
        write_bar(lake, BAR + hour * HOUR, {"BTC": []}, funding_avg_8h_pct=0.01)
    key = all_clear_key("BTC", "funding", BAR)
    claim_and_die = (
        "import os, sys\n"
        "from cg_assets.telegram.ledger import AlertLedger, SignalRef\n"
        "ledger = AlertLedger(sys.argv[1])\n"
        "claim = ledger.claim(sys.argv[2], 'BTC', [SignalRef('all_clear:funding', 'HIGH')], '1')\n"
        "assert claim.granted\n"
        "os._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", claim_and_die, str(ledger_file(settings)), key], check=True
    )
    assert AlertLedger(ledger_file(settings)).get(key).status == "pending"
    telegram.faults.update({"forbidden": 1})
    clock.now = (BAR + 3 * HOUR + timedelta(minutes=5)).timestamp()
    failed = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert failed["all_clears"] == {key: "failed"}
    clock.advance(32)
    meta = metadata(run_alerts(settings, resource(telegram), clock, instance))
    assert meta["all_clears"] == {key: "sent"}
    digest, clear = telegram.messages()
    assert clear.reply_to == digest.message_id
    assert "BTC · funding all clear" in clear.plain


def test_the_daily_cap_suppresses_per_coin_and_the_next_digest_reports_it(
    settings, lake, telegram, clock, instance
):
    high = ("oi_change", "HIGH", "OI +5.4% in 1h")
    capped = resource(telegram, daily_cap=2)
    outcomes = []
    for hour in range(3):
        ts = BAR + hour * HOUR
        write_bar(lake, ts, {"BTC": [high], **({"ETH": [high]} if hour == 2 else {})})
        clock.now = (ts + HOUR + timedelta(minutes=5)).timestamp()
        outcomes.append(metadata(run_alerts(settings, capped, clock, instance)))
    assert [(m["sent"], m["suppressed"], m["capped"]) for m in outcomes] == [
        (1, 0, 0),
        (1, 0, 0),
        (1, 1, 1),  # BTC's third is capped; ETH's first goes out
    ]
    assert outcomes[-1]["capped_today"] == {"BTC": 1}
    reason = "suppressed: daily cap: 2 digests of BTC today (UTC), ALERT_DAILY_CAP=2"
    record = AlertLedger(ledger_file(settings)).get("digest:BTC:2026-03-01T13:00Z")
    assert (record.status, record.error) == ("suppressed", reason)
    assert "OI +5.4% in 1h" in record.text  # what would have gone out
    assert [m.plain.split()[1] for m in telegram.messages()] == ["BTC", "BTC", "ETH"]

    # The next day the count starts again, and the first digest says what was held back.
    next_day = BAR + 24 * HOUR
    write_bar(lake, next_day, {"BTC": [high]})
    clock.now = (next_day + HOUR + timedelta(minutes=5)).timestamp()
    meta = metadata(run_alerts(settings, capped, clock, instance))
    assert (meta["sent"], meta["capped"], meta["capped_today"]) == (1, 0, {})
    note = "⚠️ 1 earlier digest of BTC not sent: daily cap of 2 reached (ALERT_DAILY_CAP)"
    assert note in telegram.messages()[-1].plain


def heartbeat_settings(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, heartbeat_at=time(8, 0), **changes)


def run_heartbeat(
    settings: Settings, telegram: TelegramServer, clock: Clock, instance: dg.DagsterInstance
) -> dict:
    defs = build_heartbeat_defs(settings, clock)
    result = dg.materialize(
        list(defs.assets or []), resources={"telegram": resource(telegram)}, instance=instance
    )
    return metadata(result)


def test_the_heartbeat_reports_the_day_once_per_day(settings, lake, telegram, clock, instance):
    ledger = AlertLedger(ledger_file(settings), clock=clock)
    for coin, status in (("BTC", "sent"), ("ETH", "sent"), ("SOL", "capped")):
        key = f"digest:{coin}:2026-03-01T11:00Z"
        if status == "capped":
            reason = "suppressed: daily cap: 5 digests of SOL today (UTC), ALERT_DAILY_CAP=5"
            ledger.suppress(key, coin, [SignalRef("funding", "HIGH")], "1", reason)
            continue
        claim = ledger.claim(key, coin, [SignalRef("funding", "HIGH")], "1")
        assert ledger.mark_sending(claim, "digest")
        assert ledger.mark_sent(claim, message_id=100, attempts=1)
    clock.now = (START + 20 * HOUR).timestamp()  # 2026-03-02 08:05 UTC
    meta = run_heartbeat(heartbeat_settings(settings), telegram, clock, instance)
    assert (meta["status"], meta["alerts_sent"], meta["capped_by_coin"]) == ("sent", 2, {"SOL": 1})
    [beat] = telegram.messages()
    lines = beat.plain.splitlines()
    assert lines[:3] == [
        "💓 cg-pipeline running · 2026-03-02 08:05 UTC",
        "last 24 h: 2 alerts sent (2 digests)",
        "held back by the daily cap: 1 (SOL 1)",
    ]
    assert lines[3].startswith("sidecar: down (no status file at ")  # none runs here
    # A retry the same day sends nothing; the next day's does.
    clock.advance(30)
    assert run_heartbeat(heartbeat_settings(settings), telegram, clock, instance)["status"] == (
        "skipped"
    )
    clock.advance(24 * 60)
    quiet = run_heartbeat(
        heartbeat_settings(settings, sidecar_expected=False), telegram, clock, instance
    )
    assert (quiet["status"], quiet["alerts_sent"]) == ("sent", 0)
    assert telegram.messages()[-1].plain.splitlines()[1:] == [
        "last 24 h: 0 alerts sent",
        "sidecar: not expected (CG_SIDECAR=off, or the plan has no WebSocket)",
    ]
    assert len(telegram.messages()) == 2


def test_the_heartbeat_schedule_exists_only_when_set(settings):
    assert not build_heartbeat_defs(settings).schedules
    at = dataclasses.replace(settings, heartbeat_at=time(8, 30))
    assert [s.name for s in build_alert_defs(at).schedules or []] == [SCHEDULE]
    defs = build_heartbeat_defs(at)
    [schedule] = defs.schedules or []
    assert (schedule.name, schedule.cron_schedule, schedule.execution_timezone) == (
        SCHEDULE,
        "30 8 * * *",
        "UTC",
    )
    assert schedule.job_name == JOB
    job = dg.Definitions.merge(
        defs, dg.Definitions(resources={"telegram": TelegramResource()})
    ).resolve_job_def(JOB)
    assert [node.name for node in job.nodes_in_topological_order] == ["alert_heartbeat"]
