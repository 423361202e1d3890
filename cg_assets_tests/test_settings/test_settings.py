from datetime import date
from pathlib import Path

import pytest

from cg_assets.coinglass.plans import Plan
from cg_assets.settings import Settings, SettingsError


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    return info.value.problems


def test_defaults_follow_the_design():
    s = Settings.from_env({})
    assert s.plan is Plan.STANDARD
    assert s.symbols == ("BTC", "ETH", "SOL")
    assert s.exchanges == ("Binance", "OKX", "Bybit")
    assert s.interval == "1h"
    assert s.start_date == date(2026, 1, 1)
    assert s.data_dir == Path("data").resolve()
    assert s.uses_default_api
    assert s.effective_rate_limit_per_min == 300


def test_lists_are_trimmed_and_deduplicated():
    s = Settings.from_env({"CG_SYMBOLS": " BTC, ETH ,BTC,", "CG_EXCHANGES": "OKX"})
    assert s.symbols == ("BTC", "ETH")
    assert s.exchanges == ("OKX",)


def test_unknown_plan_names_variable_value_and_choices():
    [msg] = problems({"CG_PLAN": "gold"})
    assert msg.startswith("CG_PLAN='gold'")
    assert "hobbyist, startup, standard, professional, enterprise" in msg


def test_plan_is_case_insensitive():
    assert Settings.from_env({"CG_PLAN": "Professional"}).plan is Plan.PROFESSIONAL


@pytest.mark.parametrize(
    ("value", "hint"),
    [("h1", "V3-style; write 1h"), ("7m", "not an interval CoinGlass serves"), ("hourly", "")],
)
def test_bad_interval(value: str, hint: str):
    [msg] = problems({"CG_INTERVAL": value})
    assert msg.startswith(f"CG_INTERVAL={value!r}")
    assert hint in msg
    assert "1m, 3m, 5m" in msg


@pytest.mark.parametrize(
    ("plan", "interval", "floor"),
    [("hobbyist", "1h", "4h"), ("hobbyist", "2h", "4h"), ("startup", "15m", "30m")],
)
def test_interval_below_plan_floor(plan: str, interval: str, floor: str):
    [msg] = problems({"CG_PLAN": plan, "CG_INTERVAL": interval})
    assert f"CG_INTERVAL={interval!r}" in msg
    assert f"allows intervals >= {floor}" in msg
    assert f"CG_PLAN={plan}" in msg


@pytest.mark.parametrize(("plan", "interval"), [("hobbyist", "4h"), ("startup", "30m")])
def test_interval_at_plan_floor_is_accepted(plan: str, interval: str):
    assert Settings.from_env({"CG_PLAN": plan, "CG_INTERVAL": interval}).interval == interval


@pytest.mark.parametrize("value", ["2026-13-01", "01/02/2026", "2026-1-1x"])
def test_malformed_start_date(value: str):
    [msg] = problems({"CG_START_DATE": value})
    assert msg.startswith(f"CG_START_DATE={value!r}")
    assert "YYYY-MM-DD" in msg


@pytest.mark.parametrize("value", [",", " , ,"])
def test_empty_symbol_list(value: str):
    [msg] = problems({"CG_SYMBOLS": value})
    assert msg.startswith("CG_SYMBOLS=")
    assert "empty" in msg


def test_lower_case_symbol_is_rejected_with_its_value():
    [msg] = problems({"CG_SYMBOLS": "BTC,eth"})
    assert "'eth'" in msg


def test_every_problem_is_reported_at_once():
    found = problems({"CG_PLAN": "gold", "CG_START_DATE": "x", "CG_EXCHANGES": ","})
    assert [p.split("=")[0] for p in found] == ["CG_PLAN", "CG_START_DATE", "CG_EXCHANGES"]


def test_pair_overrides_and_rate_override():
    s = Settings.from_env(
        {
            "CG_PAIR_OVERRIDES": "OKX:BTC=BTC-USDT-SWAP, Binance:ETH=ETHUSDT",
            "CG_RATE_LIMIT_PER_MIN": "50",
        }
    )
    assert s.pair_overrides == {("OKX", "BTC"): "BTC-USDT-SWAP", ("Binance", "ETH"): "ETHUSDT"}
    assert s.effective_rate_limit_per_min == 50


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CG_PAIR_OVERRIDES", "OKX-BTC"),
        ("CG_RATE_LIMIT_PER_MIN", "-5"),
        ("CG_API_BASE_URL", "localhost:8765"),
        ("SPOOL_RETENTION_DAYS", "a week"),
        ("SPOOL_RETENTION_DAYS", "0"),
        ("CG_SIDECAR", "maybe"),
        ("INGEST_INTERVAL_S", "0"),
        ("INGEST_MAX_EVENTS", "1e6"),
        ("INGEST_RETRY_BACKOFF_S", "-1"),
        ("INGEST_ALERT_AFTER_FAILURES", "three"),
        ("INGEST_MAX_RUNTIME_S", "15m"),
    ],
)
def test_other_bad_values(name: str, value: str):
    [msg] = problems({name: value})
    assert msg.startswith(f"{name}={value!r}")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),  # auto: the default plan has the WebSocket
        ({"CG_SIDECAR": "off"}, False),
        ({"CG_SIDECAR": "ON"}, True),
        ({"CG_PLAN": "startup", "CG_INTERVAL": "1h"}, False),  # auto: no WebSocket
    ],
)
def test_whether_a_sidecar_is_expected(env: dict[str, str], expected: bool):
    assert Settings.from_env(env).sidecar_expected is expected


def test_a_sidecar_cannot_be_expected_on_a_plan_without_the_websocket():
    [msg] = problems({"CG_PLAN": "hobbyist", "CG_INTERVAL": "4h", "CG_SIDECAR": "on"})
    assert msg.startswith("CG_SIDECAR='on': the liquidation WebSocket needs the Standard plan")
    assert "CG_PLAN=hobbyist" in msg


def test_ingestion_defaults():
    s = Settings.from_env({})
    assert (s.ingest_interval_s, s.ingest_max_events) == (60, 200_000)
    assert (s.ingest_retry_backoff_s, s.ingest_alert_after_failures) == (60, 3)
    assert s.ingest_max_runtime_s == 900


@pytest.mark.parametrize(
    ("value", "scheme"),
    [("host=db password=pw1", "none"), ("mysql://u:pw1@db/x", "mysql")],
)
def test_a_state_dsn_must_be_a_postgresql_url_and_is_never_quoted(value, scheme):
    [problem] = problems({"CG_STATE_DSN": value})
    assert problem.startswith(
        f"CG_STATE_DSN: expected a postgresql:// URL, got one with scheme {scheme!r}"
    )
    assert "pw1" not in problem
    Settings.from_env({"CG_STATE_DSN": "postgresql://u:pw1@db:5433/cg"})  # accepted
