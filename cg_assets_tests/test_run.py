"""`make run`'s preflight: no key, no start; a plan's blind spots are said up front."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cg_assets.run import child_env, preflight
from cg_assets.settings import Settings

KEYED = {"CG_API_KEY": "k", "TELEGRAM_BOT_TOKEN": "t", "TELEGRAM_CHAT_ID": "1"}


def test_a_missing_key_refuses_to_start_and_points_at_the_demo():
    with pytest.raises(SystemExit, match=r"CG_API_KEY is not set.*make demo"):
        preflight({"CG_API_KEY": "  "})


def test_bad_settings_stop_with_the_variable_named():
    with pytest.raises(SystemExit, match="CG_PLAN"):
        preflight({**KEYED, "CG_PLAN": "platinum"})


@pytest.mark.parametrize(
    ("plan", "interval", "expected"),
    [
        ("hobbyist", "4h", ["WebSocket", "model heatmap"]),
        ("standard", "1h", ["model heatmap"]),
        ("professional", "1h", []),
    ],
)
def test_plan_warnings(plan: str, interval: str, expected: list[str]):
    _, warnings = preflight({**KEYED, "CG_PLAN": plan, "CG_INTERVAL": interval})
    assert len(warnings) == len(expected)
    for warning, word in zip(warnings, expected, strict=True):
        assert word in warning
        assert f"CG_PLAN={plan}" in warning


@pytest.mark.parametrize(
    ("plan", "interval", "started"), [("hobbyist", "4h", False), ("standard", "1h", True)]
)
def test_the_code_location_learns_whether_the_sidecar_was_started(
    plan: str, interval: str, started: bool, tmp_path: Path
):
    settings, _ = preflight({**KEYED, "CG_PLAN": plan, "CG_INTERVAL": interval})
    env = child_env({**KEYED, "CG_PLAN": plan, "CG_INTERVAL": interval}, settings, 8790, tmp_path)
    assert env["CG_SIDECAR"] == ("on" if started else "off")
    # What `dagster dev`'s code location then reads from that environment.
    assert Settings.from_env(env).sidecar_expected is started


def test_no_telegram_means_recorded_not_sent():
    _, warnings = preflight({"CG_API_KEY": "k", "CG_PLAN": "professional"})
    assert warnings == [
        "TELEGRAM_BOT_TOKEN or TELEGRAM_CHAT_ID is not set: alerts are recorded in the"
        " ledger but not sent"
    ]


def test_the_command_exits_before_starting_anything(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("CG_PLAN=standard\n")
    done = subprocess.run(
        [sys.executable, "-m", "cg_assets.run", "--env-file", str(env_file)],
        env={"PATH": "/usr/bin:/bin", "CG_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "CG_API_KEY is not set" in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_real_endpoint_launcher_never_loads_the_simulator():
    """`make run` talks to the real CoinGlass and Telegram; the simulator belongs to
    `make demo`, so nothing `python -m cg_assets.run` imports may pull it in."""
    probe = (
        "import sys, cg_assets.run;"
        "print(','.join(m for m in sys.modules if m.split('.')[:2] == ['cg_assets', 'sim']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
