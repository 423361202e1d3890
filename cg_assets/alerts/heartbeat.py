"""The daily heartbeat: "running; N alerts in the last 24 h; sidecar up", so that a quiet chat
reads as a calm market rather than a dead pipeline.

Off unless CG_HEARTBEAT_AT (HH:MM, UTC) is set: a message every day is noise to some users,
and a schedule running on the wall clock would make any test or demo depend on the time of
day. When set, `alert_heartbeat_schedule` runs `alert_heartbeat` once a day at that time. The
message goes to the alert chat through the ledger under `heartbeat:{UTC date}`, so a retried
or re-executed run the same day sends nothing twice, and one killed mid-send leaves its row
for the next attempt like any alert. The counts come from the ledger over the 24 hours before
the run: market alerts sent by kind, digests held back by the daily cap per coin, and alerts
that failed or are of unknown delivery.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from cg_assets.alerts.hygiene import HEARTBEAT_SPAN, Activity, activity, heartbeat_text
from cg_assets.alerts.keys import heartbeat_key
from cg_assets.liquidations.assets import sidecar_staleness, status_path
from cg_assets.resources import TelegramResource
from cg_assets.resources.telegram import OPS
from cg_assets.settings import Settings
from cg_assets.telegram.delivery import deliver
from cg_assets.telegram.ledger import SignalRef

ASSET = "alert_heartbeat"
JOB = "alert_heartbeat_job"
SCHEDULE = "alert_heartbeat_schedule"


def sidecar_state(settings: Settings, now: float) -> str:
    """up / down / not expected, with the status file's word on it."""
    if not settings.sidecar_expected:
        return "not expected (CG_SIDECAR=off, or the plan has no WebSocket)"
    stale, why = sidecar_staleness(status_path(settings), now)
    return f"{'down' if stale else 'up'} ({why})"


def build_heartbeat_defs(
    settings: Settings, clock: Callable[[], float] = time.time
) -> dg.Definitions:
    """The heartbeat asset, its job and its daily schedule; empty without CG_HEARTBEAT_AT.
    `clock` (epoch seconds) is injectable so tests choose the day."""
    at = settings.heartbeat_at
    if at is None:
        return dg.Definitions()

    @dg.asset(
        name=ASSET,
        group_name="alerts",
        kinds={"telegram"},
        description=f"Daily at {at:%H:%M} UTC: 'running; N alerts in the last 24 h; sidecar"
        " up' in the alert chat, once per day through the alert ledger.",
    )
    def alert_heartbeat(
        context: dg.AssetExecutionContext, telegram: TelegramResource
    ) -> dg.MaterializeResult:
        now_s = clock()
        now = datetime.fromtimestamp(now_s, UTC)
        ledger = telegram.ledger(settings.data_dir, clock)
        seen = activity(ledger.records(since=(now - HEARTBEAT_SPAN).timestamp()))
        sidecar = sidecar_state(settings, now_s)
        text = heartbeat_text(now, seen, sidecar)
        gate = telegram.gate()
        chat_id, chat_setting = telegram.target()
        with telegram.open_sender(gate, max_wait_s=20) as sender:
            outcome = deliver(
                ledger,
                sender,
                key=heartbeat_key(now.date()),
                coin=OPS,
                signals=[SignalRef("heartbeat", "LOW")],
                chat_id=chat_id,
                render=lambda fresh, held: [text],
                suppress_reason=gate,
                chat_setting=chat_setting,
            )
        context.log.info(f"{outcome.key}: {outcome.status} {outcome.reason}".strip())
        return dg.MaterializeResult(metadata=_metadata(seen, sidecar, outcome.status, text))

    job = dg.define_asset_job(
        JOB, selection=dg.AssetSelection.assets(ASSET), description="The daily heartbeat."
    )
    schedule = dg.ScheduleDefinition(
        name=SCHEDULE,
        job=job,
        cron_schedule=f"{at.minute} {at.hour} * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Sends the heartbeat daily at {at:%H:%M} UTC (CG_HEARTBEAT_AT).",
    )
    return dg.Definitions(assets=[alert_heartbeat], jobs=[job], schedules=[schedule])


def _metadata(seen: Activity, sidecar: str, status: str, text: str) -> dict[str, object]:
    return {
        "status": status,
        "alerts_sent": seen.total,
        "sent_by_kind": dg.MetadataValue.json(dict(seen.sent)),
        "capped_by_coin": dg.MetadataValue.json(dict(seen.capped)),
        "undelivered": seen.undelivered,
        "sidecar": sidecar,
        "text": dg.MetadataValue.text(text),
    }
