"""The soak's schedule and bookkeeping, as plain functions: what it plants and when, and how
it counts lost and duplicated events, alerts and digests, RSS growth and its verdict."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.soak import (
    BurstOutcome,
    DigestFigures,
    RssSample,
    burst_outcomes,
    burst_schedule,
    digest_figures,
    digest_key,
    event_figures,
    fault_schedule,
    live_orders,
    per_run_peak_mb,
    poison_schedule,
    process_role,
    rss_growth,
    verdict,
)
from cg_assets_tests.test_liquidations.conftest import write_segment, ws_event

HEADSUP = "⚡ BTC liquidation burst: one order of $60.0M\nlongs liquidated (cascade?) at 10:15 UTC"
T = 1_773_137_700_000
REPEAT = "↻ Possible repeat: an earlier send of this alert may have arrived.\n"


def message(plain: str, message_id: int, reply_to: int | None = None) -> dict:
    return {"plain": plain, "message_id": message_id, "reply_to": reply_to}


def test_the_full_schedule_has_every_fault_of_the_issue():
    steps = fault_schedule(1200)
    actions = Counter(s.action for s in steps)
    assert actions["ws_close"] == 9 + 1  # every 2 min (not at the end) and one before a 5xx
    assert (actions["kill_worker"], actions["kill_sidecar"], actions["telegram_429"]) == (1, 1, 1)
    silence = [s for s in steps if s.action == "ping_silence"]
    assert [s.arg for s in silence] == [True, False]
    assert silence[1].at_s - silence[0].at_s == 60
    [outage] = [s for s in steps if s.action == "telegram_outage"]
    assert outage.arg == 30
    # Every 5xx burst is switched off again; one starts a second after a close.
    rates = [s for s in steps if s.action == "rest_5xx"]
    assert [s.arg > 0 for s in rates] == [True, False, True, False]
    assert any(c.action == "ws_close" and c.at_s == rates[2].at_s - 1 for c in steps)
    assert all(0 < s.at_s < 1200 for s in steps)


def test_a_three_minute_schedule_keeps_one_of_each_fault_inside_it():
    steps = fault_schedule(180, ws_close_every_s=60)
    assert {s.action for s in steps} >= {
        "ws_close",
        "rest_5xx",
        "telegram_429",
        "ping_silence",
        "kill_worker",
        "kill_sidecar",
        "telegram_outage",
    }
    assert all(0 < s.at_s < 180 for s in steps)


def test_bursts_scale_with_the_duration_and_rotate_coins():
    full = burst_schedule(1200, ("BTC", "ETH", "SOL"))
    assert len(full) == 30
    assert [s.arg for s in full[:4]] == ["BTC", "ETH", "SOL", "BTC"]
    assert all(60 <= s.at_s < 1200 - 60 for s in full)
    # The same coin never twice within a minute, so each burst has its own coin-minute.
    for a, b in zip(full, full[3:], strict=False):
        assert b.at_s - a.at_s >= 60
    assert len(burst_schedule(180, ("BTC",))) == 5
    ci = burst_schedule(180, ("BTC", "ETH", "SOL", "XRP", "DOGE"), per_20_min=45)
    assert len(ci) == 7
    for a, b in zip(ci, ci[5:], strict=False):
        assert b.at_s - a.at_s >= 60


def test_one_poison_a_minute_alternating_kinds():
    steps = poison_schedule(1200)
    assert len(steps) == 20
    assert [s.arg for s in steps[:2]] == ["microseconds", "negative_price"]


def test_event_figures_count_lost_extra_and_duplicates():
    figures = event_figures({"a", "b", "c"}, ["a", "b", "x"], duplicated=2, rows=10)
    assert (figures.sent, figures.stored, figures.lost) == (3, 2, 1)
    assert (figures.duplicated, figures.unmatched, figures.rows) == (2, 1, 10)


def test_bursts_are_matched_to_their_headsup_and_its_verdict():
    time_ms = 1_773_137_700_000  # 2026-03-10 10:15 UTC
    assert burst_outcomes([("BTC", time_ms)], [])[0].headsups == 0
    messages = [
        message(HEADSUP, 1),
        message("✅ BTC cascade confirmed", 2, reply_to=1),
        message(REPEAT + HEADSUP, 3),
        message("⚡ ETH liquidation burst: one order of $60.0M at 10:15 UTC", 4),
    ]
    # An earlier big order of the same coin-minute fired its heads-up: it covers the burst.
    earlier = message("⚡ BTC liquidation burst: one order of $54.1M\nat 10:15 UTC", 5)
    assert burst_outcomes([("BTC", time_ms)], [earlier])[0].headsups == 1
    [outcome] = burst_outcomes([("BTC", time_ms)], messages)
    assert (outcome.headsups, outcome.headsups_flagged, outcome.verdicts) == (2, 1, 1)


def test_digests_are_keyed_by_coin_and_bar_and_repeats_counted():
    digest = "🔴 BTC · 1 HIGH\n1h bar 2026-03-10 09:00 UTC\n• x\nnot financial advice"
    assert digest_key(message(digest, 1)) == ("BTC", "2026-03-10 09:00 UTC", False)
    assert digest_key(message(REPEAT + digest, 2)) == ("BTC", "2026-03-10 09:00 UTC", True)
    assert digest_key(message(HEADSUP, 3)) is None
    figures = digest_figures(
        [message(digest, 1), message(digest, 2), message(REPEAT + digest, 3)],
        ["2026-03-10 09:00 UTC", "2026-03-10 10:00 UTC"],
    )
    assert figures.per_bar == {"2026-03-10 09:00 UTC": 3}
    assert figures.missing == ["2026-03-10 10:00 UTC"]
    assert figures.repeated == 1  # three copies, one flagged: one unflagged extra


def test_rss_growth_from_the_end_of_the_first_minute():
    samples = [
        RssSample(0, 1, "sidecar", 50),
        RssSample(60, 1, "sidecar", 80),
        RssSample(600, 1, "sidecar", 95),
        RssSample(300, 2, "run worker", 200),
        RssSample(305, 2, "run worker", 210),
        # A run's step process lives past a minute on a loaded box: a peak, not growth.
        RssSample(300, 3, "run step", 300),
        RssSample(400, 3, "run step", 600),
        RssSample(500, 3, "run step", 600),
    ]
    assert rss_growth(samples, settle_s=60) == {(1, "sidecar"): (80, 95)}
    assert per_run_peak_mb(samples) == (2, 600)


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        ("/v/bin/python /v/bin/cg-sim --port 1", "simulator"),
        ("/v/bin/python -m ws_sidecar", "sidecar"),
        ("/v/bin/python /v/bin/dagster dev -w workspace.yaml", "dagster dev"),
        ("/v/bin/python -m dagster api grpc --lazy-load-user-code", "code server"),
        ("/v/bin/python -m dagster code-server start --socket /tmp/x", "code server"),
        ("/v/bin/python -m dagster._daemon run --code-server-host x", "daemon"),
        ("/v/bin/python -m dagster_webserver -h 127.0.0.1", "webserver"),
    ],
)
def test_process_roles(cmdline: str, role: str):
    assert process_role(cmdline) == role
    assert process_role("/usr/bin/python3 -c pass") == "other: python3 -c pass"


def test_the_verdict_names_each_missed_target():
    clean = event_figures({"a"}, ["a"], 0, 1)
    ok = BurstOutcome("BTC", 0, headsups=1, verdicts=1)
    digests = DigestFigures({}, [], 0)
    growth = {(1, "sidecar"): (80.0, 100.0), (2, "simulator"): (100.0, 400.0)}
    assert verdict(clean, [ok], digests, 3, 3, 0, growth).passed
    bad = verdict(
        event_figures({"a", "b"}, ["a"], 1, 2),
        [BurstOutcome("BTC", 0, headsups=2, verdicts=0)],
        DigestFigures({}, ["bar"], 1),
        2,
        3,
        1,
        {(1, "sidecar"): (80.0, 140.0)},
    )
    assert not bad.passed
    assert bad.misses == [
        "1 event(s) lost",
        "1 event duplicate(s)",
        "1 heads-up(s)/verdict(s) lost",
        "1 unflagged duplicate heads-up(s)/verdict(s)",
        "digests missing for bar",
        "1 unflagged repeated digest(s)",
        "2 quarantined vs 3 poison item(s) sent",
        "1 wedged run(s)",
        "sidecar (pid 1) RSS grew 60 MB",
    ]


def test_bursts_the_live_stream_missed_are_told_apart(tmp_path: Path):
    """Found as the heads-up sensor finds them: in the summaries the sidecar writes."""
    spool = tmp_path / "spool"
    big = ws_event(T, 0) | {"symbol": "BTC", "usd_value": 6e7, "event_id": "big"}
    small = ws_event(T + 1, 1) | {"symbol": "ETH", "usd_value": 10.0}
    write_segment(spool, 0, [big, small])
    assert live_orders(spool, 5e7) == {("BTC", T)}
    outcomes = burst_outcomes([("BTC", T), ("ETH", T + 1)], [], live_orders(spool, 5e7))
    assert [o.live for o in outcomes] == [True, False]
    # A burst the live stream missed is no lost heads-up; one it carried is.
    nothing = event_figures(set(), [], 0, 0)
    assert verdict(nothing, outcomes[1:], DigestFigures({}, [], 0), 0, 0, 0, {}).passed
    assert not verdict(nothing, outcomes, DigestFigures({}, [], 0), 0, 0, 0, {}).passed
