"""The liquidation heads-up: a Telegram warning seconds after a large burst, then a verdict.

`liquidation_headsup_sensor` reads the summaries of the spool segments the sidecar publishes
(the same files `liquidation_orders` ingests, so no extra connection; a summary rather than
every event, so a tick stays cheap at any event rate) and finds bursts with
`liquidations.triggers`; it also reads, from each new `liquidation_orders` materialization,
the recent coin-minutes of orders that only REST gap fill found (the stream was down), so a
burst the stream missed still warns, a minute or two late and marked so. Each burst launches
one run of `liquidation_alerts` (run key = coin and
minute, so a burst launches once, across daemon restarts too). The run sends a short heads-up
at once, then asks CoinGlass for the latest bars of the coin's taker flow, open interest,
funding and aggregated liquidations, and replies to the heads-up with the confirmed alert or
a "not confirmed" follow-up. Both go through the alert ledger, so dedup and cooldowns apply.

Why a run and not the sensor itself: runs are where Dagster shows what happened (logs,
metadata, retries), and the REST confirmation would not fit a sensor tick. The price is the
run's start-up, about 3–4 s on top of the sensor's 5 s tick (see benchmarks/alert_latency.py).
"""

import json
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

import dagster as dg
import pyarrow as pa

from cg_assets.alerts.confirm import (
    EVIDENCE_ASSETS,
    Confirmation,
    ConfirmRules,
    confirm,
    evidence_from_tables,
)
from cg_assets.alerts.messages import FOOTER, fmt_price, fmt_usd
from cg_assets.coinglass.errors import CoinGlassError
from cg_assets.coinglass.plans import interval_ms
from cg_assets.liquidations.assets import ASSET as ORDERS
from cg_assets.liquidations.assets import LATE_MINUTES, spool_dir
from cg_assets.liquidations.triggers import Trigger, TriggerState, TriggerThresholds, find_triggers
from cg_assets.market.fetch import fetch_by_asset, plan_requests, rows_to_table
from cg_assets.resources import COINGLASS_POOL, CoinGlassResource, TelegramResource
from cg_assets.settings import Settings
from cg_assets.telegram.delivery import Outcome, deliver
from cg_assets.telegram.ledger import SignalRef
from cg_assets.telegram.markup import escape
from ws_sidecar.spool import list_segments, segment_summary
from ws_sidecar.summary import CoinMinute, parse_summary

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

ASSET = "liquidation_alerts"
JOB = "liquidation_headsup_job"
SENSOR = "liquidation_headsup_sensor"
HEADSUP_RULE = "liquidation_burst"
MAX_SEGMENTS_PER_TICK = 500
MAX_ORDERS_EVENTS_PER_TICK = 200
# A heads-up or verdict that Telegram did not take (flood control, an outage), or a verdict
# whose evidence CoinGlass could not give (5xx, 429, a timeout), is tried again by re-running
# the step: up to HEADSUP_RETRIES times, HEADSUP_RETRY_WAIT_S apart, each try sending for up
# to 20 s, so about three minutes of trouble are ridden out. Late beats lost.
HEADSUP_RETRIES = 5
HEADSUP_RETRY_WAIT_S = 15.0


class HeadsUpConfig(dg.Config):
    """One burst, as the sensor found it, and how to confirm it."""

    coin: str
    minute: int  # ms, start of the burst's minute
    kind: str  # single | minute
    usd: float
    long_usd: float
    short_usd: float
    largest_exchange: str
    largest_pair: str
    largest_price: float
    largest_usd: float
    received_at: int  # ms, when the sidecar received the order that crossed the limit
    gap_filled: bool = False  # the stream missed the burst; REST gap fill found it, late
    rules: ConfirmRules = ConfirmRules()
    # Between tries of a step whose message Telegram did not take (see `_retry_if_undelivered`).
    retry_wait_s: float = HEADSUP_RETRY_WAIT_S

    @classmethod
    def of(cls, trigger: Trigger) -> Self:
        largest = trigger.largest
        return cls(
            coin=trigger.coin,
            minute=trigger.minute,
            kind=trigger.kind,
            usd=trigger.usd,
            long_usd=trigger.long_usd,
            short_usd=trigger.short_usd,
            largest_exchange=largest["exchange"],
            largest_pair=largest["pair"],
            largest_price=float(largest["price"]),
            largest_usd=float(largest["usd_value"]),
            received_at=trigger.received_at,
            gap_filled=trigger.gap_filled,
        )

    @property
    def side(self) -> str:
        return "long" if self.long_usd >= self.short_usd else "short"

    @property
    def story(self) -> str:
        return "long cascade" if self.side == "long" else "short squeeze"


def headsup_text(burst: HeadsUpConfig) -> str:
    minute = datetime.fromtimestamp(burst.minute / 1000, UTC)
    what = (
        f"one order of {fmt_usd(burst.usd)}"
        if burst.kind == "single"
        else f"{fmt_usd(burst.usd)} within a minute"
    )
    return "\n".join(
        [
            f"⚡ <b>{escape(burst.coin)}</b> liquidation burst: {escape(what)}",
            f"{escape(burst.side)}s liquidated ({escape(burst.story)}?) at {minute:%H:%M} UTC",
            f"largest {escape(fmt_usd(burst.largest_usd))} on {escape(burst.largest_exchange)}"
            f" {escape(burst.largest_pair)} @ {escape(fmt_price(burst.largest_price))}",
            *(
                ["<i>seen late: the live stream was down, found by REST gap fill</i>"]
                if burst.gap_filled
                else []
            ),
            "<i>checking funding, open interest, taker flow…</i>",
        ]
    )


def verdict_text(burst: HeadsUpConfig, result: Confirmation) -> str:
    head = (
        f"✅ <b>{escape(burst.coin)}</b> {escape(burst.story)} confirmed"
        if result.confirmed
        else f"❎ <b>{escape(burst.coin)}</b> {escape(burst.story)} not confirmed"
    )
    checks = [f"{'✓' if c.agrees else '✗'} {escape(c.detail)}" for c in result.checks]
    return "\n".join(
        [
            f"{head} ({result.agreeing}/{len(result.checks)} agree)",
            *checks,
            FOOTER,
        ]
    )


def fetch_evidence_tables(
    coinglass: CoinGlassResource, settings: Settings, coin: str, rules: ConfirmRules, now_ms: int
) -> dict[str, pa.Table]:
    """The latest bars of the confirming series, the current unfinished bar included."""
    client = coinglass.client
    step = interval_ms(rules.interval)
    start, end = now_ms - (rules.bars + 1) * step, now_ms + 1
    requests = plan_requests(EVIDENCE_ASSETS, [coin], settings.exchanges, client.resolve_pair)

    def history(path: str, params: dict[str, str]) -> list[dict]:
        return client.history(path, params, rules.interval, start, end)

    return {
        asset.name: rows_to_table(asset, fetched)
        for asset, fetched in fetch_by_asset(history, requests)
    }


def build_headsup_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=ASSET,
        group_name="alerts",
        deps=[ORDERS],
        kinds={"telegram"},
        description="A heads-up on Telegram seconds after a large liquidation burst, then the"
        " confirmed alert or a 'not confirmed' follow-up replying to it.",
        pool=COINGLASS_POOL,
    )
    def liquidation_alerts(
        context: dg.AssetExecutionContext,
        config: HeadsUpConfig,
        telegram: TelegramResource,
        coinglass: CoinGlassResource,
    ) -> dg.MaterializeResult:
        config.rules.validate()
        ledger = telegram.ledger(settings.data_dir)
        gate = telegram.gate()
        chat_id, chat_setting = telegram.target()
        base = f"{config.coin}:{config.minute}"
        burst_signal = [SignalRef(HEADSUP_RULE, "HIGH")]
        with telegram.open_sender(gate, max_wait_s=20) as sender:
            first = deliver(
                ledger,
                sender,
                key=f"headsup:{base}",
                coin=config.coin,
                signals=burst_signal,
                chat_id=chat_id,
                render=lambda fresh, held: [headsup_text(config)],
                suppress_reason=gate,
                chat_setting=chat_setting,
            )
            headsup_ms = int(time.time() * 1000)
            context.log.info(f"heads-up {first.key}: {first.status} {first.reason}".strip())
            _retry_if_undelivered(first, config)
            if first.message_id is None and not gate:
                # Held back (an earlier burst of this coin was told moments ago), refused by
                # Telegram or of unknown delivery: a verdict without its heads-up would confuse
                # the reader. A heads-up sent by an earlier try of this run has its message id,
                # so a re-executed run still sends the verdict.
                return _result(config, first, None, None, headsup_ms)
            try:
                tables = fetch_evidence_tables(
                    coinglass, settings, config.coin, config.rules, headsup_ms
                )
            except CoinGlassError as exc:
                _retry_if_transient(context, exc, config)
                raise
            result = confirm(
                config.side, evidence_from_tables(tables, config.rules.bars), config.rules
            )
            rule = "liquidation_confirmed" if result.confirmed else "liquidation_unconfirmed"
            second = deliver(
                ledger,
                sender,
                key=f"verdict:{base}",
                coin=config.coin,
                signals=[SignalRef(rule, "HIGH" if result.confirmed else "LOW")],
                chat_id=chat_id,
                render=lambda fresh, held: [verdict_text(config, result)],
                reply_to=first.message_id,
                suppress_reason=gate,
                chat_setting=chat_setting,
            )
            context.log.info(f"verdict {second.key}: {second.status} {second.reason}".strip())
            _retry_if_undelivered(second, config)
        return _result(config, first, second, result, headsup_ms)

    return liquidation_alerts


def _retry_if_undelivered(outcome: Outcome, config: HeadsUpConfig) -> None:
    """Ask Dagster to run the step again when Telegram did not take the message for a reason
    that may pass. A heads-up's run key fires once per coin-minute, so no later evaluation
    would send it: without this a flood storm or an outage lost it for good. The ledger lets
    the next try claim the `failed` row again (an `unknown` one goes out flagged as a possible
    repeat); a heads-up already sent is not sent twice, and its verdict still follows."""
    if outcome.worth_retrying:
        raise dg.RetryRequested(max_retries=HEADSUP_RETRIES, seconds_to_wait=config.retry_wait_s)


def _retry_if_transient(
    context: dg.AssetExecutionContext, exc: CoinGlassError, config: HeadsUpConfig
) -> None:
    """Ask Dagster to run the step again when CoinGlass could not answer for the verdict for a
    reason that may pass (5xx, 429, a timeout). Found by the CI soak: a REST outage while the
    evidence was fetched failed the run with the heads-up out and no verdict ever following
    (run retries skip a failed step, rightly so for a bug). The heads-up is not sent again."""
    if exc.transient:
        context.log.warning(f"no evidence for the verdict yet: {exc}")
        raise dg.RetryRequested(
            max_retries=HEADSUP_RETRIES, seconds_to_wait=config.retry_wait_s
        ) from exc


def _result(
    config: HeadsUpConfig,
    first: Outcome,
    second: Outcome | None,
    result: Confirmation | None,
    headsup_ms: int,
) -> dg.MaterializeResult:
    checks = (
        "\n".join(
            ["| check | agrees | evidence |", "|---|---|---|"]
            + [f"| {c.name} | {'yes' if c.agrees else 'no'} | {c.detail} |" for c in result.checks]
        )
        if result
        else "not evaluated"
    )
    return dg.MaterializeResult(
        metadata={
            "coin": config.coin,
            "burst": f"{config.kind}: ${config.usd:,.0f} ({config.side}s liquidated)",
            "headsup": f"{first.status} {first.reason}".strip(),
            "headsup_message_id": first.message_id or 0,
            "received_to_headsup_s": round((headsup_ms - config.received_at) / 1000, 2),
            "verdict": "none"
            if second is None or result is None
            else f"{'confirmed' if result.confirmed else 'not confirmed'}: {second.status}",
            "checks": dg.MetadataValue.md(checks),
        }
    )


def build_headsup_sensor(
    settings: Settings, job: "UnresolvedAssetJobDefinition", thresholds: TriggerThresholds
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR,
        job=job,
        # The daemon's loop ticks every 5 s at best; asking for 5 makes ticks that land a few
        # ms early wait a whole extra loop (10 s gaps, measured), asking for 1 gets every loop.
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {ASSET} for a single liquidation ≥ ${thresholds.single_usd:,.0f}"
        f" or ≥ ${thresholds.minute_usd:,.0f} of one coin within a minute.",
    )
    def liquidation_headsup_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        state = TriggerState.from_cursor(context.cursor)
        segments = list_segments(spool_dir(settings), after_seq=state.seq)
        if context.cursor is None:
            # Start at the spool's end: bursts from before the sensor existed are history.
            state.seq = segments[-1].seq if segments else -1
            latest = context.instance.fetch_materializations(dg.AssetKey(ORDERS), limit=1)
            state.orders_event = latest.records[0].storage_id if latest.records else 0
            return dg.SensorResult(
                cursor=state.to_cursor(), skip_reason="starting at the spool's end"
            )
        late = gap_filled(context.instance, state)
        if not segments and not late:
            return dg.SensorResult(
                cursor=state.to_cursor(),
                skip_reason=f"no spool segment after #{state.seq}, no gap-filled order",
            )
        segments = segments[:MAX_SEGMENTS_PER_TICK]
        summaries = [segment_summary(s.path) for s in segments]
        now_ms = int(time.time() * 1000)
        live = find_triggers(
            (cm for summary in summaries for cm in summary.coin_minutes), state, thresholds, now_ms
        )
        filled = find_triggers(late, state, thresholds, now_ms)
        triggers = live.triggers + [replace(t, gap_filled=True) for t in filled.triggers]
        if segments:
            state.seq = segments[-1].seq
        skipped = sum(summary.skipped for summary in summaries)
        if skipped or live.future or filled.future:
            context.log.warning(
                f"ignored {skipped} unusable spool record(s) and {live.future + filled.future}"
                " coin-minute(s) stamped after the sensor's clock"
            )
        requests = [
            dg.RunRequest(
                run_key=f"headsup-{t.key}",
                run_config=dg.RunConfig(ops={ASSET: HeadsUpConfig.of(t)}),
                # Ahead of queued ingestion and backfill runs: seconds matter here.
                tags={"coin": t.coin, "burst": t.kind, "dagster/priority": "10"},
            )
            for t in triggers
        ]
        for t in triggers:
            late_note = " (found by gap fill)" if t.gap_filled else ""
            context.log.info(
                f"{t.coin}: {t.kind} burst ${t.usd:,.0f} at minute {t.minute}{late_note}"
            )
        return dg.SensorResult(run_requests=requests, cursor=state.to_cursor())

    return liquidation_headsup_sensor


def gap_filled(instance: dg.DagsterInstance, state: TriggerState) -> list[CoinMinute]:
    """The recent coin-minutes of gap-filled orders recorded by the `liquidation_orders`
    materializations after the cursor's, which moves past them. A run over several days
    materializes each with the same metadata: one of them is read per run."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(ORDERS), after_storage_id=state.orders_event),
        limit=MAX_ORDERS_EVENTS_PER_TICK,
        ascending=True,
    ).records
    runs: set[str] = set()
    minutes: list[CoinMinute] = []
    for record in records:
        state.orders_event = record.storage_id
        materialization = record.asset_materialization
        value = materialization.metadata.get(LATE_MINUTES) if materialization else None
        if value is None or record.run_id in runs:
            continue
        runs.add(record.run_id)
        minutes += parse_summary(json.dumps(value.value)).coin_minutes
    return minutes


def thresholds_from_env(environ: Mapping[str, str]) -> TriggerThresholds:
    """HEADSUP_SINGLE_USD and HEADSUP_MINUTE_USD (defaults $1M and $5M), validated at load
    time with errors naming the variable and the value."""
    values = {}
    for field, name in (("single_usd", "HEADSUP_SINGLE_USD"), ("minute_usd", "HEADSUP_MINUTE_USD")):
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            values[field] = float(raw)
        except ValueError:
            values[field] = math.nan
        if not values[field] > 0 or math.isinf(values[field]):
            raise ValueError(f"{name}={raw!r}: expected a positive USD amount such as 1000000")
    return TriggerThresholds(**values)
