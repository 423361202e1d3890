"""The heads-up flow end to end: spool segment → sensor → run → Telegram stand-in, with the
confirmation asked of the REST simulator over a market in the middle of a long cascade."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cg_assets.alerts.headsup import (
    ASSET,
    JOB,
    SENSOR,
    HeadsUpConfig,
    headsup_text,
    thresholds_from_env,
)
from cg_assets.definitions import build_defs
from cg_assets.liquidations import INGEST_JOB
from cg_assets.settings import Settings
from cg_assets.sim import SimulatorServer, SyntheticMarket, TelegramServer
from cg_assets.sim.scenarios import scenario_for
from cg_assets.telegram.ledger import AlertLedger, ledger_path
from cg_assets_tests.test_alerts.conftest import CHAT, TOKEN
from cg_assets_tests.test_liquidations.conftest import gap, write_segment, ws_event

pytestmark = pytest.mark.slow

EPISODE_AGE_MS = 30_000


@pytest.fixture(scope="module")
def cascade_market() -> SyntheticMarket:
    """BTC's long cascade began 30 s ago (episodes come every 8 minutes after the anchor)."""
    now = int(time.time() * 1000)
    return SyntheticMarket(
        seed=11, scenario=scenario_for("cascade", now - 8 * 60_000 - EPISODE_AGE_MS, ["BTC"])
    )


@pytest.fixture
def sim(cascade_market: SyntheticMarket) -> Iterator[SimulatorServer]:
    with SimulatorServer(cascade_market, plan="professional", require_key=False) as server:
        yield server


@pytest.fixture
def standin() -> Iterator[TelegramServer]:
    with TelegramServer(tokens=[TOKEN], chats=[CHAT]) as server:
        yield server


@pytest.fixture
def alert_settings(
    settings: Settings, standin: TelegramServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
    return dataclasses.replace(settings, telegram_api_base_url=standin.base_url)


@pytest.fixture
def spool(settings: Settings) -> Path:
    return settings.data_dir / "spool"


def big_order(side: str, usd: float = 2_000_000) -> dict:
    now = int(time.time() * 1000)
    return {**ws_event(now, 0), "side": side, "usd_value": usd, "event_id": f"big-{side}"}


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs)
    return defs.resolve_sensor_def(SENSOR).evaluate_tick(context)


def run_flow(
    settings: Settings, spool: Path, order: dict
) -> tuple[dg.ExecuteInProcessResult, dg.RunRequest]:
    defs = build_defs(settings)
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, None)
        assert not first.run_requests  # a new sensor starts at the spool's end
        write_segment(spool, 0, [order, ws_event(order["time"] + 5, 1)])
        second = tick(defs, instance, first.cursor)
        [request] = second.run_requests
        assert request.run_key == f"headsup-BTC-{order['time'] // 60_000 * 60_000}"
        assert not tick(defs, instance, second.cursor).run_requests  # fired once
        result = defs.resolve_job_def(JOB).execute_in_process(
            run_config=request.run_config, instance=instance
        )
    assert result.success
    return result, request


def test_a_long_cascade_gets_a_heads_up_then_a_confirmation_in_reply(
    alert_settings: Settings, standin: TelegramServer, spool: Path
):
    result, request = run_flow(alert_settings, spool, big_order("long"))
    headsup, verdict = standin.wait_for_messages(2, timeout_s=10)
    assert "BTC</b> liquidation burst: one order of $2.0M" in headsup.text
    assert "longs liquidated (long cascade?)" in headsup.text
    assert verdict.reply_to == headsup.message_id
    assert "BTC</b> long cascade confirmed (4/4 agree)" in verdict.text
    assert "not financial advice" in verdict.text
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["headsup_message_id"].value == headsup.message_id
    assert meta["verdict"].value == "confirmed: sent"
    records = {r.key: r.status for r in AlertLedger(ledger_path(alert_settings.data_dir)).records()}
    assert sorted(records.values()) == ["sent", "sent"]

    # The next minute's burst of the same coin is within the cooldown: no heads-up, and no
    # orphan verdict either.
    config = request.run_config["ops"][ASSET]["config"]
    later = {"ops": {ASSET: {"config": {**config, "minute": config["minute"] + 60_000}}}}
    with dg.instance_for_test() as instance:
        again = (
            build_defs(alert_settings)
            .resolve_job_def(JOB)
            .execute_in_process(run_config=later, instance=instance)
        )
    meta = again.get_asset_materialization_events()[0].materialization.metadata
    assert meta["headsup"].value.startswith("suppressed")
    assert meta["verdict"].value == "none"
    assert len(standin.messages()) == 2


def test_a_short_burst_against_a_falling_market_is_not_confirmed(
    alert_settings: Settings, standin: TelegramServer, spool: Path
):
    run_flow(alert_settings, spool, big_order("short"))
    headsup, verdict = standin.wait_for_messages(2, timeout_s=10)
    assert "shorts liquidated (short squeeze?)" in headsup.text
    assert verdict.reply_to == headsup.message_id
    assert "short squeeze not confirmed" in verdict.text
    assert "✗ taker buy share" in verdict.text


def test_without_a_token_both_messages_are_recorded_as_suppressed(
    settings: Settings, standin: TelegramServer, spool: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
    run_flow(settings, spool, big_order("long"))
    assert standin.messages() == []
    records = AlertLedger(ledger_path(settings.data_dir)).records()
    assert [r.status for r in records] == ["suppressed", "suppressed"]
    assert all("no TELEGRAM_BOT_TOKEN" in (r.error or "") for r in records)


def test_the_heads_up_text_escapes_what_it_quotes():
    config = HeadsUpConfig(
        coin="A<B",
        minute=0,
        kind="minute",
        usd=6e6,
        long_usd=1e6,
        short_usd=5e6,
        largest_exchange="X&Y",
        largest_pair="P>Q",
        largest_price=1.5,
        largest_usd=2e6,
        received_at=0,
    )
    text = headsup_text(config)
    assert "<b>A&lt;B</b>" in text
    assert "X&amp;Y P&gt;Q" in text
    assert "$6.0M within a minute" in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HEADSUP_SINGLE_USD": "lots"}, "HEADSUP_SINGLE_USD='lots': expected a positive"),
        ({"HEADSUP_MINUTE_USD": "-5"}, "HEADSUP_MINUTE_USD='-5': expected a positive"),
    ],
)
def test_thresholds_from_the_environment_are_validated(env: dict[str, str], message: str):
    with pytest.raises(ValueError, match=message):
        thresholds_from_env(env)
    assert thresholds_from_env({"HEADSUP_SINGLE_USD": "250000"}).single_usd == 250_000


def burst_run_config(settings: Settings, order: dict) -> dict:
    """A run of the heads-up asset for `order` as a $2M single burst, retried 0.1 s apart,
    with one CoinGlass attempt per request, so a REST outage fails a try at once."""
    burst = {
        "coin": "BTC", "minute": order["time"] // 60_000 * 60_000, "kind": "single",
        "usd": 2e6, "long_usd": 2e6, "short_usd": 0.0, "largest_exchange": "Binance",
        "largest_pair": "BTCUSDT", "largest_price": 93_000.0, "largest_usd": 2e6,
        "received_at": order["time"], "retry_wait_s": 0.1,
    }  # fmt: skip
    coinglass = {
        "base_url": settings.api_base_url,
        "plan": settings.plan.value,
        "max_attempts": 1,
    }
    return {"ops": {ASSET: {"config": burst}}, "resources": {"coinglass": {"config": coinglass}}}


def test_a_re_executed_run_sends_the_verdict_of_a_heads_up_already_sent(
    alert_settings: Settings, standin: TelegramServer, sim: SimulatorServer, spool: Path
):
    """The first try posts the heads-up, then dies asking CoinGlass (a REST outage): the
    re-execution (a Dagster retry) must not post the heads-up again, and still send the
    verdict, replying to the heads-up already in the chat."""
    sim.faults.update({"error_5xx_rate": 1.0})
    order = big_order("long")
    minute = order["time"] // 60_000 * 60_000
    run_config = burst_run_config(alert_settings, order)
    job = build_defs(alert_settings).resolve_job_def(JOB)
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        assert not first.success
        [headsup] = standin.messages()
        sim.faults.clear()
        retry = job.execute_in_process(run_config=run_config, instance=instance)
    assert retry.success
    first_message, verdict = standin.wait_for_messages(2, timeout_s=10)
    assert first_message == headsup
    assert verdict.reply_to == headsup.message_id
    assert "BTC</b> long cascade" in verdict.text
    records = {r.key: r.status for r in AlertLedger(ledger_path(alert_settings.data_dir)).records()}
    assert records == {f"headsup:BTC:{minute}": "sent", f"verdict:BTC:{minute}": "sent"}


def test_a_verdict_whose_evidence_met_a_rest_outage_follows_once_it_passes(
    alert_settings: Settings, standin: TelegramServer, sim: SimulatorServer
):
    """Found by the CI soak: CoinGlass answering 429/5xx while the verdict's evidence was
    fetched failed the run with the heads-up out and no verdict ever following. The step now
    runs again after a wait; the heads-up is not repeated and the verdict replies to it."""
    order = big_order("long")
    run_config = burst_run_config(alert_settings, order)
    sim.faults.update({"storm_429": 1})  # the first evidence request is refused
    job = build_defs(alert_settings).resolve_job_def(JOB)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance)
    assert result.success
    retried = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retried) == 1
    headsup, verdict = standin.wait_for_messages(2, timeout_s=10)
    assert "BTC</b> liquidation burst" in headsup.text
    assert verdict.reply_to == headsup.message_id
    assert standin.requests["sendMessage"] == 2


def test_a_heads_up_refused_by_a_flood_storm_is_sent_once_it_passes(
    alert_settings: Settings, standin: TelegramServer, spool: Path
):
    """Found by the soak: Telegram's flood control outlasting one run's attempts left the
    heads-up `failed` and the run successful, so nothing ever sent it (nor its verdict). The
    step now asks Dagster to run it again after a wait, and the ledger lets it re-claim."""
    standin.faults.update({"flood": 6, "retry_after": 1})
    order = big_order("long")
    defs = build_defs(alert_settings)
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, None)
        write_segment(spool, 0, [order, ws_event(order["time"] + 5, 1)])
        [request] = tick(defs, instance, first.cursor).run_requests
        config = request.run_config["ops"][ASSET]["config"]
        run_config = {"ops": {ASSET: {"config": {**config, "retry_wait_s": 0.1}}}}
        result = defs.resolve_job_def(JOB).execute_in_process(
            run_config=run_config, instance=instance
        )
    assert result.success
    assert standin.requests["sendMessage"] > 6  # the storm was met, and outlived one try
    headsup, verdict = standin.wait_for_messages(2, timeout_s=10)
    assert "BTC</b> liquidation burst" in headsup.text
    assert verdict.reply_to == headsup.message_id
    records = AlertLedger(ledger_path(alert_settings.data_dir)).records()
    assert sorted(r.status for r in records) == ["sent", "sent"]


def test_a_burst_the_stream_missed_warns_late_once_gap_fill_finds_it(
    alert_settings: Settings, standin: TelegramServer, sim: SimulatorServer, spool: Path
):
    """The sidecar was disconnected when BTC's $2M order came: only the ingestion run's REST
    gap fill stores it. Before, the heads-up read only the live spool and never warned; now
    it reads the run's gap-filled minutes and warns once, marked late."""
    [order] = sim.feed.burst("BTC", 2e6, 1, side="long", exchange="Binance")
    minute = order.time // 60_000 * 60_000
    defs = build_defs(alert_settings)
    with dg.instance_for_test() as instance:
        start = tick(defs, instance, None)
        write_segment(
            spool,
            0,
            [
                ws_event(order.time - 20_000, 0),
                gap(order.time - 10_000, order.time + 1),
                ws_event(order.time + 2, 1),
            ],
        )
        with dg.build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources
        ) as context:
            [batch] = (
                defs.resolve_sensor_def("liquidation_spool_sensor")
                .evaluate_tick(context)
                .run_requests
            )
        ingested = defs.resolve_job_def(INGEST_JOB).execute_in_process(
            run_config=batch.run_config, tags=batch.tags, instance=instance
        )
        assert ingested.success
        found = tick(defs, instance, start.cursor)
        [request] = found.run_requests
        assert request.run_key == f"headsup-BTC-{minute}"
        config = request.run_config["ops"][ASSET]["config"]
        assert (config["gap_filled"], config["largest_usd"]) == (True, 2e6)
        assert not tick(defs, instance, found.cursor).run_requests  # read once
        result = defs.resolve_job_def(JOB).execute_in_process(
            run_config=request.run_config, instance=instance
        )
    assert result.success
    headsup, verdict = standin.wait_for_messages(2, timeout_s=10)
    assert "BTC</b> liquidation burst: one order of $2.0M" in headsup.text
    assert "seen late: the live stream was down, found by REST gap fill" in headsup.text
    assert verdict.reply_to == headsup.message_id
