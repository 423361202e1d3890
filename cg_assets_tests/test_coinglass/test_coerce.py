from __future__ import annotations

import pytest

from cg_assets.coinglass.client import coerce_row


def test_strings_and_ints_become_float_and_time_int():
    row = {"time": "1745366400000", "open": "2644845344", "close": 2608846475, "low": "-0.005063"}
    out = coerce_row(row)
    assert out == {
        "time": 1745366400000,
        "open": 2644845344.0,
        "close": 2608846475.0,
        "low": -0.005063,
    }
    assert type(out["time"]) is int
    assert all(type(out[k]) is float for k in ("open", "close", "low"))


def test_mixed_string_and_number_in_one_row():
    out = coerce_row({"time": 1, "a": 968834542.3787, "b": "169498777.1288", "c": "1e-3"})
    assert out == {"time": 1, "a": 968834542.3787, "b": 169498777.1288, "c": 0.001}


@pytest.mark.parametrize("value", ["Binance", "BTCUSDT", "NAN", "inf", "", None, True, [1, "2"]])
def test_non_numbers_are_left_alone(value):
    assert coerce_row({"time": 0, "x": value})["x"] == value
    assert type(coerce_row({"time": 0, "x": value})["x"]) is type(value)


def test_float_time_is_truncated_to_int_ms():
    assert coerce_row({"time": 1.6588800e12})["time"] == 1658880000000
