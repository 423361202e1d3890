"""`telegram_alerts`: one Telegram digest per coin for the newest evaluated bar.

It reads the latest `market_snapshot` row of each configured coin and that bar's `signals`
from the lake, and hands each coin's digest to `delivery.deliver`, which applies the ledger's
de-duplication and cooldowns, sends, and records the outcome. The asset is not partitioned: it
acts on "now" (the newest bar, judged stale or not against the wall clock), and its record is
the alert ledger, not a table of partitions; re-running it for the same bar sends nothing twice
because each digest's ledger key is (coin, bar).
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb

from cg_assets.alerts.delivery import Outcome, deliver
from cg_assets.alerts.ledger import AlertLedger, SignalRef
from cg_assets.alerts.messages import SignalLine, render_digest
from cg_assets.alerts.resources import TelegramResource
from cg_assets.automation import follows_recent_inputs
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings
from cg_assets.storage import Lake

if TYPE_CHECKING:
    from cg_assets.alerts.sender import TelegramSender

ASSET = "telegram_alerts"
GROUP = "alerts"
SNAPSHOT = "market_snapshot"
SIGNALS = "signals"
PREVIEW_CHARS = 1500

# The newest evaluated bar of each configured coin within the days read.
LATEST_SNAPSHOT_SQL = """
SELECT * EXCLUDE (date)
FROM read_parquet($glob, hive_partitioning = true, union_by_name = true)
WHERE date >= $since AND list_contains($symbols, symbol)
QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1
ORDER BY symbol
"""

# Every signal of the configured coins within the days read (matched to the bars above).
SIGNALS_SQL = """
SELECT symbol, ts, rule, level, title
FROM read_parquet($glob, hive_partitioning = true, union_by_name = true)
WHERE date >= $since AND list_contains($symbols, symbol)
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
        return f"digest:{self.coin}:{self.ts.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def read_evaluations(lake: Lake, symbols: Sequence[str], since: date) -> list[Evaluation]:
    """The newest `market_snapshot` bar per coin since `since`, with its signals."""
    if not lake.has_data(SNAPSHOT):
        return []
    params = {"since": since, "symbols": list(symbols)}
    con = duckdb.connect()
    try:
        snapshots = con.sql(
            LATEST_SNAPSHOT_SQL, params={**params, "glob": lake.glob(SNAPSHOT)}
        ).to_arrow_table()
        signals = (
            con.sql(SIGNALS_SQL, params={**params, "glob": lake.glob(SIGNALS)}).to_arrow_table()
            if lake.has_data(SIGNALS)
            else None
        )
    finally:
        con.close()
    fired: dict[tuple[str, datetime], list[SignalLine]] = {}
    for row in [] if signals is None else signals.to_pylist():
        line = SignalLine(row["rule"], row["level"], row["title"])
        fired.setdefault((row["symbol"], row["ts"]), []).append(line)
    return [
        Evaluation(row["symbol"], row, tuple(fired.get((row["symbol"], row["ts"]), ())))
        for row in snapshots.to_pylist()
    ]


def stale_reason(snapshot: dict[str, Any], now: datetime, interval_ms: int, bars: float) -> str:
    """Why the inputs are too old to alert on ('' = fresh): the newest input bar is more than
    `bars` intervals older than `now`."""
    newest = snapshot.get("data_ts") or snapshot.get("ts")
    if newest is None:
        return "suppressed: stale inputs: the snapshot has no data timestamp"
    age = now - newest
    limit = timedelta(milliseconds=interval_ms * bars)
    if age <= limit:
        return ""
    return (
        f"suppressed: stale inputs: newest input bar {newest:%Y-%m-%d %H:%M} UTC is"
        f" {age.total_seconds() / 3600:.1f} h old at {now:%H:%M} UTC (limit {bars:g} bars,"
        f" {limit.total_seconds() / 3600:.1f} h)"
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
        automation_condition=follows_recent_inputs(),
        kinds={"telegram", "duckdb"},
        description="One Telegram digest per coin for its newest evaluated bar, de-duplicated"
        " and cooled down through the alert ledger.",
        check_specs=[
            dg.AssetCheckSpec(
                "delivered",
                asset=ASSET,
                description="Every alert of the evaluation was sent or deliberately suppressed.",
            )
        ],
    )
    def telegram_alerts(
        context: dg.AssetExecutionContext, telegram: TelegramResource, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        now = datetime.fromtimestamp(clock(), UTC)
        reach = timedelta(milliseconds=settings.interval_ms * (telegram.stale_after_bars + 1))
        evaluations = read_evaluations(
            lake.lake, settings.symbols, (now - reach - timedelta(days=1)).date()
        )
        ledger = telegram.ledger(lake.lake.data_dir, clock)
        gate = telegram.gate()
        chat_id, chat_setting = telegram.target()
        pending = [e for e in evaluations if e.signals]
        outcomes: list[Outcome] = []
        if gate or not pending:
            outcomes = [
                _deliver(context, settings, ledger, None, e, gate, chat_id, chat_setting)
                for e in pending
            ]
        else:
            with telegram.sender() as sender:
                for evaluation in pending:
                    stale = stale_reason(
                        evaluation.snapshot, now, settings.interval_ms, telegram.stale_after_bars
                    )
                    outcomes.append(
                        _deliver(
                            context,
                            settings,
                            ledger,
                            sender,
                            evaluation,
                            stale,
                            chat_id,
                            chat_setting,
                        )
                    )
        yield dg.MaterializeResult(metadata=_metadata(evaluations, outcomes, ledger))
        failed = [o for o in outcomes if o.status == "failed"]
        yield dg.AssetCheckResult(
            check_name="delivered",
            passed=not failed,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{o.coin}: {o.reason}" for o in failed) or "no failures",
        )

    return telegram_alerts


def _deliver(
    context: dg.AssetExecutionContext,
    settings: Settings,
    ledger: AlertLedger,
    sender: "TelegramSender | None",
    evaluation: Evaluation,
    suppress_reason: str,
    chat_id: str,
    chat_setting: str,
) -> Outcome:
    lines = {s.rule: s for s in evaluation.signals}

    def render(fresh: Sequence[SignalRef], held: Sequence[tuple[SignalRef, str]]) -> list[str]:
        return render_digest(
            evaluation.coin,
            evaluation.snapshot,
            [lines[s.rule] for s in fresh],
            also_active=[lines[s.rule] for s, _ in held],
            interval=settings.interval,
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
    if outcome.status == "failed" or "stale inputs" in outcome.reason:
        context.log.warning(message)
    else:
        context.log.info(message)
    return outcome


def _metadata(
    evaluations: Sequence[Evaluation], outcomes: Sequence[Outcome], ledger: AlertLedger
) -> dict[str, Any]:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("sent", "suppressed", "failed")}
    counts["skipped"] = sum(o.status == "skipped" for o in outcomes)
    shown = next((o for o in outcomes if o.status == "sent"), outcomes[0] if outcomes else None)
    rows = [
        f"| {o.coin} | {o.status} | {o.message_id or ''} | {_cell(o.reason)} |" for o in outcomes
    ]
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
        "ledger": str(ledger.path),
    }


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
