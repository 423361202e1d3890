"""`telegram_alerts`: one Telegram digest per coin for the newest evaluated bar.

It reads the latest `market_snapshot` row of each configured coin and that bar's `signals`
from the lake, and hands each coin's digest to `delivery.deliver`, which applies the ledger's
de-duplication and cooldowns, sends, and records the outcome. The asset is not partitioned: it
acts on "now" (the newest bar, judged stale or not against the wall clock), and its record is
the alert ledger, not a table of partitions; re-running it for the same bar sends nothing twice
because each digest's ledger key is (coin, bar).

It also pays what earlier evaluations owe: a digest that was claimed but never confirmed sent
(the run died or was interrupted, Telegram failed or did not answer) is sent again, before the
newest bar's, for `stale_after_bars` bars after it was first decided, and judged fresh or
stale as of that first decision, since only its delivery was late. When Telegram refuses a
digest for a reason that may pass (flood control, an outage), the step first asks Dagster to
run it again a few times, seconds apart (`DigestConfig`): the next evaluation could be an hour
away, and a digest owed since the bar closed is worth more now than then.

Input completeness: a digest for bar T goes out only once every market input has its row for
T (the snapshot's `absent_inputs` is empty), or once `INPUTS_DEADLINE` after T closed has
passed, and then the message names the inputs it went without. Until then the digest is held:
nothing is recorded in the ledger, so a later evaluation of the same bar (the refresh landed,
`signals` re-ran) decides afresh and the corrected bar alerts once. The snapshot never fills
a missing input from an earlier bar, so a late refresh can no longer repeat the bar before.

Hygiene (`hygiene`, `allclear`): after the digests, each HIGH episode that has ended (with
hysteresis) gets an "all clear" in reply to its first HIGH digest; with ALERT_DAILY_CAP, a
coin's digests beyond the cap for the UTC day are recorded as suppressed, and the coin's next
digest that goes out says how many were held back.
"""

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb

from cg_assets.alerts import allclear
from cg_assets.alerts.hygiene import (
    CAP_REASON,
    cap_reason,
    capped_by_coin,
    capped_note,
    capped_since_last_sent,
    day_start,
    digests_counted,
)
from cg_assets.alerts.keys import DIGEST_PREFIX, digest_bar, digest_key
from cg_assets.alerts.messages import SignalLine, render_digest
from cg_assets.alerts.record import QUOTED_HORIZON, record_line
from cg_assets.automation import follows_recent_inputs
from cg_assets.partitions import days_between
from cg_assets.resources import LakeResource, TelegramResource
from cg_assets.settings import Settings
from cg_assets.signals.engine import ASSET as SIGNALS
from cg_assets.signals.engine import SCHEMA as SIGNALS_SCHEMA
from cg_assets.signals.rules import predicted_side
from cg_assets.signals.scorecard import ASSET as SCORECARD
from cg_assets.signals.snapshot import ASSET as SNAPSHOT
from cg_assets.signals.snapshot import SCHEMA as SNAPSHOT_SCHEMA
from cg_assets.storage import Lake
from cg_assets.telegram.delivery import Outcome, deliver
from cg_assets.telegram.ledger import AlertLedger, AlertRecord, SignalRef

if TYPE_CHECKING:
    from cg_assets.telegram.sender import TelegramSender

ASSET = "telegram_alerts"
GROUP = "alerts"
PREVIEW_CHARS = 1500
# How long after its bar closed a digest waits for inputs the bar lacks. The hourly market
# refresh stores a bar at HH:05 and the digest follows it by automation; it is evaluated again
# at HH:37 (RECHECK_CRON), after this deadline, so a held digest is decided within the hour even
# if the late input never lands.
INPUTS_DEADLINE = timedelta(minutes=30)
RECHECK_CRON = "37 * * * *"
# A digest (or all clear) Telegram did not take is tried again by re-running the step, up to
# DIGEST_RETRIES times DIGEST_RETRY_WAIT_S apart (about two minutes of flood control or outage
# with each try's own attempts); after that it is owed to the next evaluations.
DIGEST_RETRIES = 5
DIGEST_RETRY_WAIT_S = 15.0


class DigestConfig(dg.Config):
    """How the step rides out a Telegram that refuses for a while (see the module docstring)."""

    retries: int = DIGEST_RETRIES
    retry_wait_s: float = DIGEST_RETRY_WAIT_S


# The newest evaluated bar of each configured coin within the days read, and the bars named in
# $owed ("symbol@epoch ms") whose digests an earlier evaluation did not deliver; oldest first.
LATEST_SNAPSHOT_SQL = """
SELECT * EXCLUDE (date)
FROM market_snapshot
WHERE list_contains($symbols, symbol)
QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1
    OR list_contains($owed, symbol || '@' || epoch_ms(ts))
ORDER BY symbol, ts
"""

# Every signal of the configured coins within the days read (matched to the bars above).
SIGNALS_SQL = """
SELECT symbol, ts, rule, level, title, evidence
FROM signals
WHERE list_contains($symbols, symbol)
ORDER BY symbol, ts, rule
"""


@dataclass(frozen=True)
class Evaluation:
    """One coin's newest bar: its snapshot row and the signals that fired on it."""

    coin: str
    snapshot: dict[str, Any]
    signals: tuple[SignalLine, ...]

    @property
    def ts(self) -> datetime:
        return self.snapshot["ts"]

    @property
    def key(self) -> str:
        return digest_key(self.coin, self.ts)


def read_evaluations(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    symbols: Sequence[str],
    days: Sequence[date],
    owed: Sequence[tuple[str, datetime]] = (),
    records: Mapping[tuple[str, str, str, str], Mapping[str, Any]] | None = None,
) -> list[Evaluation]:
    """The newest `market_snapshot` bar per coin within `days`, and the `owed` (coin, bar)
    ones, with their signals, each quoting its rule's record from `records` (see
    `read_records`; None: not quoted); per coin oldest first."""
    lake.attach(con, SNAPSHOT, days, SNAPSHOT_SCHEMA)
    lake.attach(con, SIGNALS, days, SIGNALS_SCHEMA)
    params = {"symbols": list(symbols)}
    owed_bars = [f"{coin}@{int(ts.timestamp() * 1000)}" for coin, ts in owed]
    snapshots = con.sql(LATEST_SNAPSHOT_SQL, params={**params, "owed": owed_bars})
    snapshots = snapshots.to_arrow_table()
    signals = con.sql(SIGNALS_SQL, params=params).to_arrow_table()
    fired: dict[tuple[str, datetime], list[SignalLine]] = {}
    for row in signals.to_pylist():
        record = "" if records is None else quote(row, records)
        line = SignalLine(row["rule"], row["level"], row["title"], record)
        fired.setdefault((row["symbol"], row["ts"]), []).append(line)
    return [
        Evaluation(row["symbol"], row, tuple(fired.get((row["symbol"], row["ts"]), ())))
        for row in snapshots.to_pylist()
    ]


def read_records(lake: Lake) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The newest scorecard's rows at the quoted horizon, by (rule, level, coin, side)."""
    days = lake.days(SCORECARD)
    table = lake.read_days(SCORECARD, days[-1:]) if days else None
    if table is None:
        return {}
    return {
        (r["rule"], r["level"], r["symbol"], r["side"]): r
        for r in table.to_pylist()
        if r["horizon"] == QUOTED_HORIZON
    }


def quote(
    signal: Mapping[str, Any], records: Mapping[tuple[str, str, str, str], Mapping[str, Any]]
) -> str:
    """The record line of one `signals` row: its rule's cell for the side it predicts."""
    rule, level, coin = signal["rule"], signal["level"], signal["symbol"]
    try:
        side = predicted_side(rule, json.loads(signal["evidence"])).word
    except ValueError:
        return record_line(rule, level, coin, None)
    return record_line(rule, level, coin, records.get((rule, level, coin, side)))


@dataclass(frozen=True)
class Held:
    """A digest not decided yet: its bar lacks inputs and their deadline is still ahead."""

    key: str
    coin: str
    reason: str


def stale_reason(snapshot: dict[str, Any], now: datetime, interval_ms: int, bars: float) -> str:
    """Why the bar is too old to alert on ('' = fresh): it started more than `bars` intervals
    before `now` (every snapshot value is the bar's own, so the bar's age is the inputs')."""
    bar = snapshot.get("ts")
    if bar is None:
        return "suppressed: stale inputs: the snapshot has no bar time"
    age = now - bar
    limit = timedelta(milliseconds=interval_ms * bars)
    if age <= limit:
        return ""
    return (
        f"suppressed: stale inputs: bar {bar:%Y-%m-%d %H:%M} UTC is"
        f" {age.total_seconds() / 3600:.1f} h old at {now:%H:%M} UTC (limit {bars:g} bars,"
        f" {limit.total_seconds() / 3600:.1f} h)"
    )


def waiting_reason(snapshot: dict[str, Any], now: datetime, interval_ms: int) -> str:
    """Why the digest must wait ('' = decide now): inputs with no row at the bar, before
    INPUTS_DEADLINE after the bar closed."""
    absent = [str(name) for name in snapshot.get("absent_inputs") or ()]
    if not absent:
        return ""
    bar = snapshot["ts"]
    deadline = bar + timedelta(milliseconds=interval_ms) + INPUTS_DEADLINE
    if now >= deadline:
        return ""
    return (
        f"held: no {', '.join(absent)} bar at {bar:%Y-%m-%d %H:%M} UTC yet; waiting until"
        f" {deadline:%H:%M} UTC, then sent naming what is missing"
    )


def build_alert_assets(
    settings: Settings, clock: Callable[[], float] = time.time
) -> dg.AssetsDefinition:
    """The asset for these settings; `clock` (epoch seconds) is the evaluation time and the
    ledger's, injectable so tests move time instead of sleeping."""

    @dg.asset(
        name=ASSET,
        group_name=GROUP,
        # The digest reads the newest rows of the last day or two. An unpartitioned asset
        # cannot name "the last two partitions" (a time-window mapping needs a partitioned
        # child, and LastPartitionMapping would miss yesterday's finalize), so every partition
        # is declared, on purpose rather than by default; the automation condition narrows
        # the triggers to the days read.
        deps=[
            dg.AssetDep(SIGNALS, partition_mapping=dg.AllPartitionMapping()),
            dg.AssetDep(SNAPSHOT, partition_mapping=dg.AllPartitionMapping()),
        ],
        automation_condition=follows_recent_inputs(recheck_cron=RECHECK_CRON),
        kinds={"telegram", "duckdb"},
        description="One Telegram digest per coin for its newest evaluated bar, de-duplicated"
        " and cooled down through the alert ledger, and an all clear in reply to a HIGH alert"
        " whose condition has ended.",
        check_specs=[
            dg.AssetCheckSpec(
                "delivered",
                asset=ASSET,
                description="Every alert of the evaluation was sent or deliberately suppressed.",
            )
        ],
    )
    def telegram_alerts(
        context: dg.AssetExecutionContext,
        config: DigestConfig,
        telegram: TelegramResource,
        lake: LakeResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        now = datetime.fromtimestamp(clock(), UTC)
        ledger = telegram.ledger(lake.lake.data_dir, clock)
        retry_s = settings.interval_ms / 1000 * telegram.stale_after_bars
        owed = {r.key: r for r in ledger.undelivered(DIGEST_PREFIX, now.timestamp() - retry_s)}
        owed_bars = [digest_bar(key) for key in owed]
        reach = timedelta(milliseconds=settings.interval_ms * (telegram.stale_after_bars + 1))
        oldest = min([now - reach, *(ts for _, ts in owed_bars)])
        since = datetime.combine((oldest - timedelta(days=1)).date(), time_of_day.min, UTC)
        lookback = now - allclear.LOOKBACK
        with lake.connect() as con:
            evaluations = read_evaluations(
                con,
                lake.lake,
                settings.symbols,
                days_between(since, now + timedelta(days=1)),
                owed_bars,
                read_records(lake.lake),
            )
            ended = (
                allclear.read_ended(
                    con,
                    lake.lake,
                    settings.symbols,
                    days_between(lookback, now + timedelta(days=1)),
                    lookback,
                    timedelta(milliseconds=settings.interval_ms),
                )
                if telegram.all_clear
                else []
            )
        gate = telegram.gate()
        chat_id, chat_setting = telegram.target()
        held = [
            Held(e.key, e.coin, why)
            for e in evaluations
            if e.signals and (why := waiting_reason(e.snapshot, now, settings.interval_ms))
        ]
        for digest in held:
            context.log.info(f"{digest.key}: {digest.reason}")
        waiting = {h.key for h in held}
        pending = [e for e in evaluations if e.signals and e.key not in waiting]
        clears = allclear.due(ended, ledger, now, reach)
        outcomes: list[Outcome] = []
        # A sender only when there is something to send and nothing gates it.
        idle = "" if pending or clears else "nothing to send"
        with telegram.open_sender(gate or idle) as sender:
            for evaluation in pending:
                # An owed digest is judged as of when it was first decided.
                decided = owed.get(evaluation.key)
                as_of = datetime.fromtimestamp(decided.created_at, UTC) if decided else now
                reason = gate or stale_reason(
                    evaluation.snapshot, as_of, settings.interval_ms, telegram.stale_after_bars
                )
                notes: list[str] = []
                if not reason and telegram.daily_cap:
                    reason, notes = _daily_cap(ledger, evaluation, now, telegram.daily_cap)
                outcomes.append(
                    _deliver(
                        context,
                        settings,
                        ledger,
                        sender,
                        evaluation,
                        reason,
                        chat_id,
                        chat_setting,
                        notes,
                    )
                )
            cleared = [
                allclear.send(ledger, sender, clear, chat_id, chat_setting, gate)
                for clear in clears
            ]
        for outcome in cleared:
            context.log.info(f"{outcome.key}: {outcome.status} {outcome.reason}".strip())
        _retry_if_undelivered(context, config, [*outcomes, *cleared])
        today = ledger.records(since=day_start(now).timestamp())
        yield dg.MaterializeResult(
            metadata=_metadata(evaluations, outcomes, held, ledger, list(owed), cleared, today)
        )
        failed = [o for o in [*outcomes, *cleared] if o.status in ("failed", "unknown")]
        yield dg.AssetCheckResult(
            check_name="delivered",
            passed=not failed,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{o.coin}: {o.reason}" for o in failed) or "no failures",
        )

    return telegram_alerts


def _retry_if_undelivered(
    context: dg.AssetExecutionContext, config: DigestConfig, outcomes: Sequence[Outcome]
) -> None:
    """Ask Dagster to run the step again while a message Telegram refused may still go out
    soon. Found by the soak: a 429 storm outlasting one try left the newest bar's digests
    `failed` in a successful run, and nothing evaluated them again until the hourly recheck.
    The retry re-claims the `failed` rows (an `unknown` one goes out flagged as a possible
    repeat); what was sent is not sent again. On the last try the run succeeds with the
    check failed, and the digest stays owed to the next evaluations."""
    refused = [o.key for o in outcomes if o.worth_retrying]
    if refused and context.retry_number < config.retries:
        context.log.warning(
            f"Telegram did not take {', '.join(refused)}; trying again in"
            f" {config.retry_wait_s:g} s (try {context.retry_number + 1} of {config.retries + 1})"
        )
        raise dg.RetryRequested(max_retries=config.retries, seconds_to_wait=config.retry_wait_s)


def _deliver(
    context: dg.AssetExecutionContext,
    settings: Settings,
    ledger: AlertLedger,
    sender: "TelegramSender | None",
    evaluation: Evaluation,
    suppress_reason: str,
    chat_id: str,
    chat_setting: str,
    notes: Sequence[str] = (),
) -> Outcome:
    lines = {s.rule: s for s in evaluation.signals}

    def render(fresh: Sequence[SignalRef], held: Sequence[tuple[SignalRef, str]]) -> list[str]:
        return render_digest(
            evaluation.coin,
            evaluation.snapshot,
            [lines[s.rule] for s in fresh],
            also_active=[lines[s.rule] for s, _ in held],
            interval=settings.interval,
            notes=notes,
        )

    outcome = deliver(
        ledger,
        sender,
        key=evaluation.key,
        coin=evaluation.coin,
        signals=[SignalRef(s.rule, s.level) for s in evaluation.signals],
        chat_id=chat_id,
        render=render,
        suppress_reason=suppress_reason,
        chat_setting=chat_setting,
    )
    message = f"{evaluation.key}: {outcome.status}" + (
        f" ({outcome.reason})" if outcome.reason else ""
    )
    if outcome.status in ("failed", "unknown") or "stale inputs" in outcome.reason:
        context.log.warning(message)
    else:
        context.log.info(message)
    return outcome


def _daily_cap(
    ledger: AlertLedger, evaluation: Evaluation, now: datetime, cap: int
) -> tuple[str, list[str]]:
    """(why the digest is capped, '' if it is not; the line reporting earlier capped digests
    that it then carries). Counted from the ledger as it stands: two runs deciding the same
    coin at the same moment could together exceed the cap by one."""
    coin = evaluation.coin
    midnight = day_start(now)
    recent = ledger.records(coin=coin, since=(midnight - timedelta(days=1)).timestamp())
    today = [r for r in recent if r.created_at >= midnight.timestamp()]
    reason = cap_reason(coin, digests_counted(today, coin, evaluation.key), cap)
    if reason:
        return reason, []
    note = capped_note(coin, capped_since_last_sent(recent, coin), cap)
    return "", [note] if note else []


def _metadata(
    evaluations: Sequence[Evaluation],
    outcomes: Sequence[Outcome],
    held: Sequence[Held],
    ledger: AlertLedger,
    owed: Sequence[str],
    cleared: Sequence[Outcome],
    today: Sequence[AlertRecord],
) -> dict[str, Any]:
    statuses = ("sent", "suppressed", "failed", "unknown", "skipped")
    counts = {s: sum(o.status == s for o in outcomes) for s in statuses}
    counts["held"] = len(held)
    shown = next((o for o in outcomes if o.status == "sent"), outcomes[0] if outcomes else None)
    rows = [
        f"| {o.coin} | {o.status} | {o.message_id or ''} | {_cell(o.reason)} |" for o in outcomes
    ] + [f"| {h.coin} | held |  | {_cell(h.reason)} |" for h in held]
    return {
        **counts,
        "coins_evaluated": len(evaluations),
        "bars": dg.MetadataValue.json({e.coin: e.ts.isoformat() for e in evaluations}),
        "outcomes": dg.MetadataValue.md(
            "\n".join(["| coin | status | message | reason |", "|---|---|---|---|", *rows])
        )
        if rows
        else "no signals on the newest bars",
        "preview": dg.MetadataValue.text(shown.text[:PREVIEW_CHARS]) if shown else "",
        "owed": dg.MetadataValue.json(list(owed)),
        "capped": sum(o.reason.startswith(CAP_REASON) for o in outcomes),
        "capped_today": dg.MetadataValue.json(capped_by_coin(today)),
        "all_clear_sent": sum(o.status == "sent" for o in cleared),
        "all_clears": dg.MetadataValue.json({o.key: o.status for o in cleared}),
        "ledger": ledger.ident,
    }


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
