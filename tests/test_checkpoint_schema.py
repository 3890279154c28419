"""Tampered run and checkpoint attributes: each is refused with one line naming the file and the fault."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xpnn.checkpoint_schema import (
    BIT_GENERATORS,
    check_counter,
    check_format_version,
    check_history,
    parse_json_attr,
    rng_from_state,
)

WHERE = "runs/x/checkpoint.h5"


@pytest.mark.parametrize("name", BIT_GENERATORS)
def test_each_numpy_bit_generator_round_trips_through_json(name):
    rng = np.random.Generator(getattr(np.random, name)(7))
    rng.random(3)
    back = rng_from_state(json.loads(json.dumps(rng.bit_generator.state, default=np.ndarray.tolist)), WHERE)
    assert type(back.bit_generator).__name__ == name
    assert np.array_equal(back.random(5), rng.random(5))


def test_a_state_naming_another_callable_is_refused_without_calling_it(monkeypatch):
    called = []
    monkeypatch.setattr(np.random, "seed", lambda *a: called.append(a))
    for name in ("seed", "RandomState", "default_rng", "BitGenerator", "__class__", None, 3):
        with pytest.raises(ValueError, match=rf"{WHERE}: the RNG state names bit generator .*only PCG64, PCG64DXSM"):
            rng_from_state({"bit_generator": name, "state": {}}, WHERE)
    assert called == []


def test_a_malformed_state_of_an_allowed_generator_is_refused():
    good = np.random.default_rng(1).bit_generator.state
    with pytest.raises(ValueError, match=r"the RNG state must be a table; got list"):
        rng_from_state([good], WHERE)
    with pytest.raises(ValueError, match=r"the PCG64 RNG state must hold exactly \['bit_generator', 'has_uint32',"):
        rng_from_state({k: v for k, v in good.items() if k != "uinteger"}, WHERE)
    with pytest.raises(ValueError, match=r"the PCG64 RNG state's 'state' must be a table with \['inc', 'state'\]"):
        rng_from_state({**good, "state": {"state": 1}}, WHERE)
    with pytest.raises(ValueError, match=r"the PCG64 RNG state is not valid"):
        rng_from_state({**good, "state": {"state": "x", "inc": 1}}, WHERE)


def test_json_attributes_are_bounded_and_named():
    assert parse_json_attr('{"a": [1, "[[[["]}', "h") == {"a": [1, "[[[["]}  # brackets in strings do not nest
    assert parse_json_attr(b"[1]", "h") == [1] and parse_json_attr(np.bytes_(b"2"), "h") == 2
    with pytest.raises(ValueError, match=rf"{WHERE}: history is not valid JSON"):
        parse_json_attr("{history: 1", f"{WHERE}: history")
    with pytest.raises(ValueError, match=rf"{WHERE}: config must be JSON text; got a NoneType"):
        parse_json_attr(None, f"{WHERE}: config")  # a missing attribute
    with pytest.raises(ValueError, match=r"nests JSON 100000 levels deep \(xpnn reads at most 64\)"):
        parse_json_attr("[" * 100_000 + "]" * 100_000, "h")
    with pytest.raises(ValueError, match=r"nests JSON 3 levels deep \(xpnn reads at most 2\)"):
        parse_json_attr('{"a": [{}]}', "h", max_depth=2)
    with pytest.raises(ValueError, match=r"is 11 characters of JSON, more than the 10 xpnn reads"):
        parse_json_attr('"012345678"', "h", max_bytes=10)
    with pytest.raises(ValueError, match=r"is not UTF-8 text"):
        parse_json_attr(b"\xff\xfe", "h")


def test_history_must_be_lists_of_numbers():
    good = {"history": {"loss": [1.0, float("nan")], "val_loss": [2.0]}, "epoch": [1, 2]}
    assert check_history(json.loads(json.dumps(good)), WHERE)["epoch"] == [1, 2]
    bad = [
        ("[]", r"must be a table with 'history' and 'epoch'"),
        ({"history": {}}, r"must be a table with 'history' and 'epoch'"),
        ({"history": {}, "epoch": [1, "2"]}, r"'epoch' must be a list of epoch numbers"),
        ({"history": [], "epoch": []}, r"'history' must be a table of metric lists"),
        ({"history": {"loss": ["x"]}, "epoch": [1]}, r"'loss' must be a list of numbers"),
        ({"history": {"loss": [True]}, "epoch": [1]}, r"'loss' must be a list of numbers"),
        ({"history": {"loss": [1.0, 2.0]}, "epoch": [1]}, r"'loss' has 2 values for 1 epochs"),
    ]
    for obj, match in bad:
        with pytest.raises(ValueError, match=rf"{WHERE}: the history.*{match}|{WHERE}: the history {match}"):
            check_history(obj, WHERE)


def test_format_version_must_be_a_known_integer():
    with pytest.raises(ValueError, match=rf"{WHERE} has no format_version attribute; the file is damaged"):
        check_format_version(None, WHERE, 2)  # every xpnn file has one: missing is damage, not "format 1"
    assert check_format_version(np.int64(2), WHERE, 2) == 2
    for bad in ("1", 1.5, True, np.array([1, 2])):
        with pytest.raises(ValueError, match=rf"{WHERE}: format_version must be an integer; got"):
            check_format_version(bad, WHERE, 2)
    with pytest.raises(ValueError, match=r"format_version 0 is not one xpnn ever wrote"):
        check_format_version(0, WHERE, 2)
    with pytest.raises(ValueError, match=rf"{WHERE} uses xpnn model format 3, newer than this xpnn reads \(2\)"):
        check_format_version(3, WHERE, 2)


def test_epoch_and_step_counters():
    assert check_counter(np.int64(4), "epoch", WHERE) == 4
    for bad in (-1, 1.0, "3", None, True):
        with pytest.raises(ValueError, match=rf"{WHERE}: step must be a non-negative integer"):
            check_counter(bad, "step", WHERE)
