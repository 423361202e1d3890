"""Ops alerts: short Telegram messages about the pipeline itself, not the market.

A failed run and a silent sidecar are incidents an operator should hear about without watching
the UI. They go to `TELEGRAM_OPS_CHAT_ID` when set (else the alert chat), through the same
ledger as market alerts, so each incident is told once: a run failure is keyed by its run id,
a sidecar incident by the moment it began, and the ledger's cooldown keeps a flapping job from
flooding the chat. Sending is `cg_assets.resources.telegram.send_ops`, shared with the
liquidations domain's sidecar health sensor; this module reports failed runs.
"""

import dagster as dg

from cg_assets.resources import TelegramResource, send_ops
from cg_assets.settings import Settings
from cg_assets.telegram.markup import escape

MAX_ERROR_CHARS = 300


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
