"""Sidecar settings from the environment: defaults, the key in the URL, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ws_sidecar.config import DEFAULT_WS_URL, Config, ConfigError, mask_url
from ws_sidecar.validate import EventWindow

KEY = "cg-secret-0123456789abcdef"


def test_defaults_are_the_production_values():
    config = Config.from_env({"CG_API_KEY": KEY})
    assert config.ws_url == DEFAULT_WS_URL
    assert config.data_dir == Path("data")
    assert config.spool_dir == Path("data/spool")
    assert config.status_path == Path("data/sidecar_status.json")
    assert config.channel == "liquidationOrders"
    assert (config.health_host, config.health_port) == ("127.0.0.1", 8790)
    assert (config.ping_interval_s, config.pong_timeout_s, config.watchdog_s) == (20, 10, 120)
    assert (config.segment_max_events, config.segment_max_age_s) == (5000, 1)
    assert (config.backoff_base_s, config.backoff_cap_s, config.stable_after_s) == (1, 60, 60)
    assert config.event_window == EventWindow(lag_ms=3_600_000, lead_ms=300_000)
    assert config.quarantine_path == Path("data/quarantine.jsonl")
    assert config.quarantine_max_mb == 10


def test_the_event_window_and_quarantine_size_are_settings():
    config = Config.from_env(
        {"CG_API_KEY": KEY, "SIDECAR_EVENT_MAX_LAG_S": "86400", "SIDECAR_EVENT_MAX_LEAD_S": "0.5",
         "SIDECAR_QUARANTINE_MAX_MB": "0.25"}
    )  # fmt: skip
    assert config.event_window == EventWindow(lag_ms=86_400_000, lead_ms=500)
    assert config.quarantine_max_mb == 0.25


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_the_health_server_can_listen_beyond_loopback(host):
    """A container's probes and Prometheus reach the sidecar at its own address."""
    assert Config.from_env({"CG_API_KEY": KEY, "SIDECAR_HEALTH_HOST": host}).health_host == host


def test_the_key_goes_into_the_url_and_only_the_mask_is_shown():
    config = Config.from_env({"CG_API_KEY": KEY, "CG_WS_URL": "wss://example.com/ws-api?x=1"})
    assert config.connect_url == f"wss://example.com/ws-api?x=1&cg-api-key={KEY}"
    assert config.masked_url == "wss://example.com/ws-api?x=1&cg-api-key=***"
    assert KEY not in repr(config)
    assert KEY in config.secrets


def test_mask_url_hides_only_the_key():
    assert mask_url("ws://h/p?cg-api-key=abc&channel=x") == "ws://h/p?cg-api-key=***&channel=x"
    assert mask_url("ws://h/p") == "ws://h/p"


@pytest.mark.parametrize("url", ["ws://127.0.0.1:9000/ws-api", "ws://localhost:1/ws-api"])
def test_a_loopback_simulator_needs_no_key(url):
    config = Config.from_env({"CG_WS_URL": url})
    assert config.connect_url == url
    assert config.secrets == ()


def test_the_real_service_needs_a_key():
    with pytest.raises(ConfigError, match="CG_API_KEY is not set"):
        Config.from_env({})


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CG_WS_URL", "https://open-ws.coinglass.com/ws-api", "ws:// or wss://"),
        ("CG_WS_URL", "wss://x/ws-api?cg-api-key=abc", "wss://x/ws-api?cg-api-key=***"),
        ("CG_WS_CHANNEL", "liquidations", "liquidationOrders, liquidation_orders"),
        ("SIDECAR_HEALTH_HOST", "example.com", "IP address to listen on"),
        ("SIDECAR_HEALTH_PORT", "70000", "TCP port"),
        ("SIDECAR_HEALTH_PORT", "http", "integer"),
        ("SIDECAR_PING_INTERVAL_S", "-1", "> 0"),
        ("SIDECAR_PONG_TIMEOUT_S", "nan", "finite"),
        ("SIDECAR_SEGMENT_MAX_EVENTS", "0", ">= 1"),
        ("SIDECAR_WATCHDOG_S", "10", "must exceed SIDECAR_PING_INTERVAL_S"),
        ("SIDECAR_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("SIDECAR_EVENT_MAX_LAG_S", "86401", "at most 86400 s (one day)"),
        ("SIDECAR_EVENT_MAX_LEAD_S", "0", "> 0"),
        ("SIDECAR_QUARANTINE_MAX_MB", "lots", "number of megabytes"),
        ("SIDECAR_QUARANTINE_MAX_MB", "-1", "megabytes > 0"),
    ],
)
def test_bad_values_are_reported_with_variable_and_value(name, value, expected):
    with pytest.raises(ConfigError) as info:
        Config.from_env({"CG_API_KEY": KEY, name: value})
    message = str(info.value)
    assert name in message
    assert expected in message
    if "cg-api-key" in value:
        assert "put the key in CG_API_KEY" in message
        assert "abc" not in message
    else:
        assert value in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Config.from_env({"CG_WS_CHANNEL": "x", "SIDECAR_HEALTH_PORT": "-5"})
    assert len(info.value.problems) == 3  # channel, port, and the missing key


def test_liquidation_orders_is_a_valid_channel():
    config = Config.from_env({"CG_API_KEY": KEY, "CG_WS_CHANNEL": "liquidation_orders"})
    assert config.channel == "liquidation_orders"
