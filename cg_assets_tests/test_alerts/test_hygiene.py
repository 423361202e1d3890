"""The pure hygiene rules: HIGH episodes and their hysteresis, the daily cap's counting, the
heartbeat's text; and the settings that switch them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

import pytest

from cg_assets.alerts.hygiene import (
    EXITS,
    BarState,
    Episode,
    Exit,
    activity,
    all_clear_text,
    cap_reason,
    capped_note,
    capped_since_last_sent,
    day_start,
    digests_counted,
    ended_episodes,
    find_ended,
    heartbeat_text,
    reply_target,
)
from cg_assets.alerts.keys import all_clear_key, digest_key, heartbeat_key, kind
from cg_assets.resources.telegram import build_telegram_resource, parse_cap
from cg_assets.settings import Settings, SettingsError
from cg_assets.telegram.ledger import AlertRecord
from cg_assets_tests.test_alerts.conftest import snapshot_row

HOUR = timedelta(hours=1)
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
FUNDING_CUT = 0.10  # funding's HIGH floor; its exit is 80 % of it, 0.08


def bars(*steps: tuple[str | None, float | None], cut: float | None = FUNDING_CUT) -> list:
    """Hourly bars from T0: (level, metric value); HIGH bars carry the HIGH cut."""
    return [
        BarState(T0 + i * HOUR, level, value, cut if level == "HIGH" else None, "funding")
        for i, (level, value) in enumerate(steps)
    ]


def test_a_series_flipping_across_the_cut_never_clears():
    """The metric hovers around the HIGH cut: above it (HIGH), just below (MEDIUM) and back,
    for a day. Without hysteresis every dip would be an all clear and every rise a new HIGH."""
    flips = bars(*[("HIGH", 0.11) if i % 2 == 0 else ("MEDIUM", 0.09) for i in range(24)])
    assert ended_episodes("funding", flips, HOUR) == []
    # Dropping under the exit for a single bar between the flips is not enough either.
    dips = bars(*[("HIGH", 0.11) if i % 2 == 0 else (None, 0.05) for i in range(24)])
    assert ended_episodes("funding", dips, HOUR) == []


def test_the_flip_flop_ends_once_with_every_high_bar_in_one_episode():
    series = bars(
        (None, 0.03),
        ("HIGH", 0.12),
        ("MEDIUM", 0.09),
        ("HIGH", 0.11),
        (None, 0.07),  # under the exit: clear 1
        ("HIGH", 0.13),  # back: the count restarts
        ("MEDIUM", 0.07),
        (None, 0.05),  # clear 2: over
        (None, 0.04),
        ("HIGH", 0.12),  # a new episode, still open at the end
        (None, 0.02),
    )
    [episode] = ended_episodes("funding", series, HOUR)
    assert episode.high_bars == (T0 + HOUR, T0 + 3 * HOUR, T0 + 5 * HOUR)
    assert episode.ended_at == T0 + 7 * HOUR
    assert episode.threshold == pytest.approx(0.08)
    assert (episode.metric, episode.value) == ("funding", 0.05)


def test_a_missing_metric_or_a_missing_bar_does_not_count_as_clear():
    unknown = bars(("HIGH", 0.12), (None, 0.05), (None, None), (None, 0.05))
    assert ended_episodes("funding", unknown, HOUR) == []
    gap = bars(("HIGH", 0.12), (None, 0.05), (None, 0.05), (None, 0.05), (None, 0.05))
    del gap[2]  # bar 2 was never evaluated: bars 1 and 3 are not two consecutive bars
    [episode] = ended_episodes("funding", gap, HOUR)
    assert episode.ended_at == T0 + 4 * HOUR


def test_rules_without_a_metric_clear_on_the_level_over_three_bars():
    series = [
        BarState(T0 + i * HOUR, level)
        for i, level in enumerate(["HIGH", "MEDIUM", None, "HIGH", None, "MEDIUM", None])
    ]
    [episode] = ended_episodes("confluence", series, HOUR)
    assert (episode.high_bars, episode.ended_at) == ((T0, T0 + 3 * HOUR), T0 + 6 * HOUR)
    assert episode.threshold is None
    assert episode.metric is None
    # A numeric rule whose evidence recorded no cut falls back to the level.
    no_cut = bars(("HIGH", None), (None, None), (None, None), cut=None)
    [fallback] = ended_episodes("funding", no_cut, HOUR)
    assert fallback.threshold is None


def test_each_rule_has_its_exit_below_the_cut():
    assert EXITS["funding"].threshold(0.10) == pytest.approx(0.08)
    assert EXITS["oi_change"].threshold(5.0) == pytest.approx(3.0)
    assert EXITS["liquidations"].threshold(50e6) == pytest.approx(25e6)
    assert EXITS["retail_positioning"].threshold(65.0) == pytest.approx(62.0)
    assert EXITS["smart_money"].threshold(10.0) == pytest.approx(7.0)
    assert EXITS["heatmap_zone"].threshold(1.0) is None
    with pytest.raises(ValueError, match="bars=0"):
        Exit(0)
    with pytest.raises(ValueError, match=r"scale=1\.5"):
        Exit(2, scale=1.5)


def signal_row(coin: str, ts: datetime, rule: str, level: str, evidence: dict) -> dict:
    evidence_json = json.dumps(evidence)
    return {"symbol": coin, "ts": ts, "rule": rule, "level": level, "evidence": evidence_json}


def test_episodes_from_lake_rows_use_the_metric_and_cut_the_evidence_names():
    """A long-liquidation HIGH clears when the longs liquidated per hour fall to half its cut
    (computed from the snapshot as the rule does), whatever the shorts do."""
    snapshots = [
        snapshot_row("BTC", T0 + i * HOUR, long_liq_usd=longs, short_liq_usd=1e6)
        for i, longs in enumerate([60e6, 30e6, 20e6, 10e6])
    ] + [snapshot_row("ETH", T0 + i * HOUR) for i in range(4)]
    evidence = {"metric": "long_liq", "value": 60e6, "cuts": {"HIGH": 50e6}}
    signals = [
        signal_row("BTC", T0, "liquidations", "HIGH", evidence),
        signal_row("BTC", T0 + HOUR, "liquidations", "MEDIUM", {"metric": "total_liq"}),
        signal_row("ETH", T0, "funding", "MEDIUM", {}),  # never HIGH: no episode
    ]
    [(coin, episode)] = find_ended(snapshots, signals, HOUR)
    assert coin == "BTC"
    assert (episode.rule, episode.metric, episode.threshold) == ("liquidations", "long_liq", 25e6)
    assert episode.ended_at == T0 + 3 * HOUR  # 30M is above the exit; 20M and 10M are below
    assert "long_liq $10.0M, at or below the exit $25.0M for 2 bars" in all_clear_text(
        coin, episode
    )


def record(key: str, status: str, **values: object) -> AlertRecord:
    coin = key.split(":")[1]
    fields = {
        "key": key,
        "coin": coin,
        "rules": ("funding",),
        "level": "HIGH",
        "chat_id": "1",
        "status": status,
        "error": "",
        "note": "",
        "message_id": None,
        "reply_to": None,
        "attempts": 1,
        "text": "",
        "created_at": T0.timestamp(),
        "claimed_at": T0.timestamp(),
        "updated_at": T0.timestamp(),
        "unconfirmed": 0,
    }
    return AlertRecord(**{**fields, **values})  # type: ignore[arg-type]


def test_the_all_clear_replies_to_the_first_high_digest_that_carried_the_rule():
    episode = Episode(
        "funding", (T0, T0 + 2 * HOUR), T0 + 4 * HOUR, EXITS["funding"], 0.08, "funding", 0.05
    )
    keys = [digest_key("BTC", T0 + i * HOUR) for i in range(3)]
    records = [
        record(keys[0], "sent", message_id=7, rules=("oi_change",)),  # funding held back then
        record(keys[1], "sent", message_id=8),  # a MEDIUM bar of the episode
        record(keys[2], "sent", message_id=9),
        record(digest_key("ETH", T0), "sent", message_id=6),
    ]
    bar_of = {k: T0 + i * HOUR for i, k in enumerate(keys)} | {records[3].key: T0}
    assert reply_target("BTC", episode, records, bar_of) == 9
    told_nobody = [record(keys[0], "suppressed"), record(keys[2], "failed")]
    assert reply_target("BTC", episode, told_nobody, bar_of) is None


def test_keys_name_what_they_dedup():
    assert all_clear_key("BTC", "funding", T0 + HOUR) == "allclear:BTC:funding:2026-03-01T01:00Z"
    assert heartbeat_key(T0.date()) == "heartbeat:2026-03-01"
    assert [kind(k) for k in ("digest:BTC:x", "ops:run-failure:1", "heartbeat:d")] == [
        "digest",
        "ops",
        "heartbeat",
    ]


def test_the_cap_counts_digests_that_may_have_reached_the_chat():
    today = [
        record("digest:BTC:a", "sent"),
        record("digest:BTC:b", "unknown", unconfirmed=1),
        record("digest:BTC:c", "pending"),
        record("digest:BTC:d", "failed"),  # nothing reached the chat
        record("digest:BTC:e", "suppressed"),
        record("digest:BTC:f", "failed", unconfirmed=1),  # possibly delivered once
        record("digest:ETH:a", "sent"),  # another coin
        record("allclear:BTC:funding:x", "sent"),  # all clears are not capped
    ]
    assert digests_counted(today, "BTC", "digest:BTC:z") == 4
    assert digests_counted(today, "BTC", "digest:BTC:a") == 3  # its own row is not counted
    assert cap_reason("BTC", 3, 4) == ""
    assert cap_reason("BTC", 4, 4) == (
        "suppressed: daily cap: 4 digests of BTC today (UTC), ALERT_DAILY_CAP=4"
    )
    assert cap_reason("BTC", 100, 0) == ""  # 0: no cap
    assert day_start(T0 + 23 * HOUR + timedelta(minutes=59)) == T0


def test_the_next_allowed_digest_reports_what_the_cap_held_back_since_the_last_one():
    capped = cap_reason("BTC", 2, 2)
    history = [
        record("digest:BTC:1", "sent"),
        record("digest:BTC:2", "suppressed", error=capped),
        record("digest:BTC:3", "sent"),  # the count restarts after a digest that went out
        record("digest:BTC:4", "suppressed", error=capped),
        record("digest:BTC:5", "suppressed", error="suppressed: stale inputs: ..."),
        record("digest:BTC:6", "suppressed", error=capped),
        record("digest:ETH:1", "suppressed", error=capped),
    ]
    assert capped_since_last_sent(history, "BTC") == 2
    assert capped_note("BTC", 2, 2) == (
        "⚠️ 2 earlier digests of BTC not sent: daily cap of 2 reached (ALERT_DAILY_CAP)"
    )
    assert capped_note("BTC", 0, 2) == ""


def test_the_heartbeat_counts_market_alerts_by_kind_and_the_capped_by_coin():
    capped = cap_reason("SOL", 3, 3)
    seen = activity(
        [
            record("digest:BTC:1", "sent"),
            record("digest:ETH:1", "sent"),
            record("allclear:BTC:funding:1", "sent"),
            record("headsup:SOL:1", "sent"),
            record("digest:SOL:1", "suppressed", error=capped),
            record("digest:SOL:2", "suppressed", error=capped),
            record("digest:ETH:2", "unknown", unconfirmed=2),
            record("ops:run-failure:1", "sent"),  # not a market alert
            record("heartbeat:2026-02-28", "sent"),
        ]
    )
    text = heartbeat_text(T0 + 8 * HOUR, seen, "up (connected, status written 1 s ago)")
    assert text.splitlines() == [
        "💓 <b>cg-pipeline running</b> · 2026-03-01 08:00 UTC",
        "last 24 h: 4 alerts sent (2 digests, 1 all clear, 1 heads-up)",
        "held back by the daily cap: 2 (SOL 2)",
        "not delivered: 1 (see the alert ledger)",
        "sidecar: up (connected, status written 1 s ago)",
    ]
    quiet = heartbeat_text(T0, activity([]), "not expected")
    assert "last 24 h: 0 alerts sent" in quiet
    assert "cap" not in quiet


def test_hygiene_settings_are_validated_with_the_variable_named():
    assert Settings.from_env({}).heartbeat_at is None
    assert Settings.from_env({"CG_HEARTBEAT_AT": "off"}).heartbeat_at is None
    assert Settings.from_env({"CG_HEARTBEAT_AT": "08:30"}).heartbeat_at == time(8, 30)
    with pytest.raises(SettingsError, match=r"CG_HEARTBEAT_AT='8am': expected a UTC time"):
        Settings.from_env({"CG_HEARTBEAT_AT": "8am"})
    assert parse_cap("") == 0
    assert parse_cap("12") == 12
    with pytest.raises(ValueError, match=r"ALERT_DAILY_CAP='-1': expected a whole number"):
        parse_cap("-1")
    settings = Settings.from_env({})
    resource = build_telegram_resource(settings, {"ALERT_DAILY_CAP": "5"})
    assert (resource.daily_cap, resource.all_clear) == (5, True)
    off = build_telegram_resource(settings, {"ALERT_ALL_CLEAR": "off"})
    assert off.all_clear is False
    with pytest.raises(ValueError, match=r"ALERT_ALL_CLEAR='sometimes'"):
        build_telegram_resource(settings, {"ALERT_ALL_CLEAR": "sometimes"})
