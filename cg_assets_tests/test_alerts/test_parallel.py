"""Two `telegram_alerts` runs at the same time, in separate processes, send each alert once.

Each process materializes the asset with Dagster against the same lake, ledger and stand-in;
they are released together once both are ready, and the stand-in answers slowly so that the first
run is still sending (its claim `pending`) while the second decides.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from cg_assets.settings import Settings
from cg_assets.sim import TelegramServer
from cg_assets.storage import Lake
from cg_assets.telegram.ledger import AlertLedger
from cg_assets_tests.test_alerts.conftest import CHAT, TOKEN, write_bar

pytestmark = pytest.mark.slow

RUN = """
import sys
import dagster as dg
from cg_assets.alerts.assets import build_alert_assets
from cg_assets.resources.telegram import TelegramResource
from cg_assets.resources import LakeResource
from cg_assets.settings import Settings

settings = Settings.from_env()
telegram = TelegramResource(bot_token=sys.argv[1], chat_id=sys.argv[2],
                            base_url=settings.telegram_api_base_url, ledger_location=sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # the test releases both processes at once
with dg.instance_for_test() as instance:
    result = dg.materialize(
        [build_alert_assets(settings)],
        resources={"telegram": telegram, "lake": LakeResource.at(settings.data_dir)},
        instance=instance,
    )
meta = result.get_asset_materialization_events()[0].materialization.metadata
print("sent", meta["sent"].value, "skipped", meta["skipped"].value, flush=True)
"""


def test_two_runs_at_once_send_each_alert_exactly_once(env, ledger_location: str):
    """On either backend of the ledger (`ledger_location`)."""
    with TelegramServer(tokens=[TOKEN], chats=[CHAT]) as tg:
        tg.faults.update({"slow": 2, "slow_s": 1.5})  # the winner is still sending...
        proc_env = {**os.environ, **env, "TELEGRAM_API_BASE_URL": tg.base_url}
        settings = Settings.from_env(proc_env)
        bar = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        write_bar(
            Lake(settings.data_dir),
            bar,
            {"BTC": [("funding", "HIGH", "Funding extreme")], "ETH": [("oi_change", "HIGH", "OI")]},
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RUN, TOKEN, str(CHAT), ledger_location],
                env=proc_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for proc in procs:  # both have imported Dagster and built the asset
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-3000:]
        outputs = [p.communicate("go\n", timeout=120) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err[-3000:]
        received = tg.messages()
    assert sorted(m.plain.split()[1] for m in received) == ["BTC", "ETH"]  # once per coin
    totals = [tuple(int(x) for x in out.split()[1::2]) for out, _ in outputs]
    assert sum(sent for sent, _ in totals) == 2
    assert sum(skipped for _, skipped in totals) == 2
    records = AlertLedger(ledger_location).records()
    assert [(r.coin, r.status) for r in records] == [("BTC", "sent"), ("ETH", "sent")]
