"""Ops alerts: short Telegram messages about the pipeline itself, not the market.

A failed run and a silent sidecar are incidents an operator should hear about without watching
the UI. They go to `TELEGRAM_OPS_CHAT_ID` when set (else the alert chat), through the same
ledger as market alerts, so each incident is told once: a run failure is keyed by its run id,
a sidecar incident by the moment it began, and the ledger's cooldown keeps a flapping job from
flooding the chat.
"""

from pathlib import Path

import dagster as dg

from cg_assets.alerts.delivery import Outcome, deliver
from cg_assets.alerts.ledger import SignalRef
from cg_assets.alerts.messages import escape
from cg_assets.alerts.resources import TelegramResource
from cg_assets.settings import Settings

OPS = "ops"
MAX_ERROR_CHARS = 300


def send_ops(
    telegram: TelegramResource, data_dir: Path, key: str, rule: str, lines: list[str]
) -> Outcome:
    """Record and (unless gated) send one ops message; `lines` are already-escaped HTML."""
    gate = telegram.gate(ops=True)
    chat_id, setting = telegram.target(ops=True)
    ledger = telegram.ledger(data_dir)
    with telegram.open_sender(gate, max_wait_s=20) as sender:
        return deliver(
            ledger,
            sender,
            key=key,
            coin=OPS,
            signals=[SignalRef(rule, "HIGH")],
            chat_id=chat_id,
            render=lambda fresh, held: ["\n".join(["🛠 <b>cg-pipeline ops</b>", *lines])],
            suppress_reason=gate,
            chat_setting=setting,
        )


def run_failure_lines(job: str, run_id: str, error: str) -> list[str]:
    message = " ".join(error.split())
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return [
        f"run of <b>{escape(job)}</b> failed",
        f"run id <code>{escape(run_id)}</code>",
        escape(message or "no error message"),
    ]


def build_ops_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    @dg.run_failure_sensor(
        name="ops_run_failure_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Tells the ops chat about every failed run, once per run.",
    )
    def ops_run_failure_sensor(
        context: dg.RunFailureSensorContext, telegram: TelegramResource
    ) -> None:
        run = context.dagster_run
        error = context.failure_event.message or ""
        outcome = send_ops(
            telegram,
            settings.data_dir,
            key=f"ops:run-failure:{run.run_id}",
            rule=f"run_failure:{run.job_name}",
            lines=run_failure_lines(run.job_name, run.run_id, error),
        )
        context.log.info(f"run {run.run_id} failure: ops alert {outcome.status} {outcome.reason}")

    return [ops_run_failure_sensor]
