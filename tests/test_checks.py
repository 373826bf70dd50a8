"""explorer._checks: what each check accepts, what it refuses, with which error, and that the message names the
argument first, says what is accepted and shows what it got."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from explorer._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_floating,
    check_int,
    check_int_tuple,
    check_positive_int,
    check_real,
    check_shape,
    check_tensor,
    check_type,
    describe,
)


def _message(error_type, call) -> str:
    with pytest.raises(error_type) as info:
        call()
    assert type(info.value) is error_type  # not a subclass standing in for the other kind
    return str(info.value)


# --- describe -----------------------------------------------------------------------------------------------------


def test_describe_names_type_and_short_value():
    assert describe(2.5) == "float 2.5"
    assert describe("3") == "str '3'"
    assert describe(True) == "bool True"
    assert describe(None) == "NoneType None"
    assert describe(torch.zeros(2, 3, dtype=torch.long)) == "Tensor of dtype torch.int64 and shape (2, 3)"
    assert describe(object()) == "object"  # no repr for arbitrary objects (addresses, multi-line module reprs)
    long = describe("x" * 500)
    assert long.startswith("str 'xxx") and long.endswith("...") and len(long) < 80


# --- bool ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts_bools(value):
    assert check_bool("causal", value) is value


@pytest.mark.parametrize("value", [0, 1, "yes", None, np.bool_(True), torch.tensor(True)])
def test_check_bool_refuses_everything_else_with_type_error(value):
    message = _message(TypeError, lambda: check_bool("causal", value))
    assert message.startswith("causal must be a bool, got ")


# --- int ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, low, high", [(0, None, None), (-5, None, 0), (1, 1, None), (7, 1, 7), (3, 3, 3)])
def test_check_int_accepts_ints_in_range(value, low, high):
    result = check_int("n", value, low, high)
    assert result == value and type(result) is int


@pytest.mark.parametrize("value", [True, False, 2.0, 2.5, "3", None, np.int64(3), torch.tensor(3), Fraction(3)])
def test_check_int_refuses_non_ints_bools_included(value):
    message = _message(TypeError, lambda: check_int("window", value, 1))
    assert message.startswith("window must be an int >= 1, got ")
    assert type(value).__name__ in message


@pytest.mark.parametrize("value, low, high, accepted", [
    (0, 1, None, "an int >= 1"),
    (9, None, 8, "an int <= 8"),
    (9, 1, 8, "an int in [1, 8]"),
    (-1, 0, 3, "an int in [0, 3]"),
])
def test_check_int_refuses_out_of_range_with_value_error(value, low, high, accepted):
    message = _message(ValueError, lambda: check_int("layers", value, low, high))
    assert message == f"layers must be {accepted}, got {value}"


def test_check_int_integral_accepts_numpy_integers_and_returns_python_ints():
    result = check_int("seed", np.int64(4), 0, integral=True)
    assert result == 4 and type(result) is int
    _message(TypeError, lambda: check_int("seed", np.float64(4.0), 0, integral=True))
    _message(TypeError, lambda: check_int("seed", np.bool_(True), 0, integral=True))
    _message(TypeError, lambda: check_int("seed", True, 0, integral=True))
    assert _message(ValueError, lambda: check_int("seed", np.int8(-1), 0, integral=True)).startswith("seed must")


def test_check_int_optional_and_note():
    assert check_int("window", None, 1, optional=True) is None
    message = _message(TypeError, lambda: check_int("window", 2.0, 1, optional=True))
    assert message == "window must be None or an int >= 1, got float 2.0"
    message = _message(ValueError, lambda: check_int("steps", 0, 1, note="integration points"))
    assert message == "steps must be an int >= 1 (integration points), got 0"
    _message(TypeError, lambda: check_int("window", None, 1))  # None only when optional


def test_check_positive_int():
    assert check_positive_int("n", 1) == 1
    assert _message(ValueError, lambda: check_positive_int("n", 0)) == "n must be an int >= 1, got 0"
    _message(TypeError, lambda: check_positive_int("n", True))


# --- int tuple ----------------------------------------------------------------------------------------------------


def test_check_int_tuple_accepts_an_int_or_a_tuple_or_list():
    assert check_int_tuple("kernel_size", 3, 2, 1) == (3, 3)
    assert check_int_tuple("kernel_size", (3, 5), 2, 1) == (3, 5)
    assert check_int_tuple("kernel_size", [3, 5], 2, 1) == (3, 5)
    assert check_int_tuple("padding", 0, 1, 0) == (0,)
    result = check_int_tuple("stride", (np.int64(2), 1), 2, 1, integral=True)
    assert result == (2, 1) and all(type(item) is int for item in result)


@pytest.mark.parametrize("value, error", [
    (True, TypeError), (2.0, TypeError), ("3", TypeError), ((3, 2.0), TypeError), ((3, True), TypeError),
    ((3,), ValueError), ((3, 3, 3), ValueError), (0, ValueError), ((3, 0), ValueError),
])
def test_check_int_tuple_refusals(value, error):
    message = _message(error, lambda: check_int_tuple("kernel_size", value, 2, 1))
    assert message.startswith("kernel_size must be an int >= 1 or a tuple of 2 such ints")


def test_check_int_tuple_note():
    message = _message(ValueError, lambda: check_int_tuple("stride", 0, 2, 1, note="rows, cols"))
    assert message == "stride must be an int >= 1 or a tuple of 2 such ints (rows, cols), got 0"


# --- real ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.5, 1, 1.0, np.float32(0.25), np.int64(1), Fraction(1, 2)])
def test_check_real_accepts_real_numbers_and_returns_floats(value):
    result = check_real("residual", value, 0, 1)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize("value", [True, "0.5", None, 1j, torch.tensor(0.5), [0.5]])
def test_check_real_refuses_non_numbers(value):
    message = _message(TypeError, lambda: check_real("residual", value, 0, 1))
    assert message.startswith("residual must be a number in [0, 1], got ")


@pytest.mark.parametrize("value, kwargs, accepted", [
    (-0.1, dict(low=0, high=1), "a number in [0, 1]"),
    (1.5, dict(low=0, high=1), "a number in [0, 1]"),
    (0, dict(low=0, high=1, low_open=True), "a number in (0, 1]"),
    (1, dict(low=0, high=1, high_open=True), "a number in [0, 1)"),
    (0.0, dict(low=0, low_open=True, finite=True), "a finite number > 0"),
    (math.inf, dict(low=0, low_open=True, finite=True), "a finite number > 0"),
    (-1, dict(low=0), "a number >= 0"),
    (3, dict(high=2, high_open=True), "a number < 2"),
    (math.nan, dict(), "a number"),
])
def test_check_real_refuses_out_of_range_and_nan(value, kwargs, accepted):
    message = _message(ValueError, lambda: check_real("scale", value, **kwargs))
    assert message == f"scale must be {accepted}, got {value!r}"


def test_check_real_infinity_is_allowed_unless_finite():
    assert check_real("eps", math.inf, 0) == math.inf
    assert check_real("scale", None, 0, optional=True) is None
    assert _message(TypeError, lambda: check_real("scale", "x", 0, optional=True)).startswith(
        "scale must be None or a number >= 0, got str")


# --- choices, types, callables ------------------------------------------------------------------------------------


def test_check_choice():
    assert check_choice("mode", "zeros", ("zeros", "circular")) == "zeros"
    assert check_choice("pool", "max", ["none", "max"]) == "max"
    message = _message(ValueError, lambda: check_choice("mode", "wrap", ("zeros", "circular")))
    assert message == "mode must be one of ('zeros', 'circular'), got 'wrap'"
    # a value of another type is not one of the choices either: ValueError, whatever its type
    for value in (None, 3, ["zeros"], torch.tensor([1, 2]), True):
        assert _message(ValueError, lambda: check_choice("mode", value, ("zeros", "circular"))).startswith("mode must")
    # True is not the choice 1, and 1 is not the choice True
    _message(ValueError, lambda: check_choice("level", True, (1, 2)))
    _message(ValueError, lambda: check_choice("flag", 1, (True, False)))
    assert check_choice("level", 2, (1, 2)) == 2


def test_check_type_and_callable():
    assert check_type("config", 3, int, "an int config") == 3
    message = _message(TypeError, lambda: check_type("model", "cnn", torch.nn.Module, "an nn.Module"))
    assert message == "model must be an nn.Module, got str 'cnn'"
    assert check_callable("fn", len) is len
    assert _message(TypeError, lambda: check_callable("fn", 3)) == "fn must be callable, got int 3"


# --- tensors ------------------------------------------------------------------------------------------------------


def test_check_tensor_accepts_what_it_is_asked_for():
    x = torch.zeros(2, 3, 4)
    assert check_tensor("x", x) is x
    assert check_tensor("x", x, "[batch, query, key]", dtype="float", ndim=3, nonempty=True) is x
    assert check_tensor("x", x, dtype=(torch.float16, torch.float32), min_ndim=2) is x
    assert check_tensor("ids", torch.zeros(2, dtype=torch.int32), dtype="int") is not None
    assert check_tensor("mask", torch.zeros(2, dtype=torch.bool), dtype=torch.bool, ndim=1) is not None
    # with min_ndim only the named (trailing) dims must be non-empty: an empty leading batch is fine
    assert check_tensor("p", torch.zeros(0, 3, 3), "[..., query, key]", min_ndim=2, nonempty=True).shape[0] == 0


@pytest.mark.parametrize("value, kwargs, error, start", [
    ([1.0], dict(dtype="float"), TypeError, "x must be a torch.Tensor [batch, key] of floating-point dtype, got list"),
    (np.zeros(3), dict(), TypeError, "x must be a torch.Tensor [batch, key], got ndarray"),
    (torch.zeros(2, 3, dtype=torch.long), dict(dtype="float"), TypeError,
     "x must be a floating-point tensor [batch, key], got dtype torch.int64"),
    (torch.zeros(2, 3), dict(dtype="int"), TypeError, "x must be an integer tensor [batch, key], got dtype"),
    (torch.zeros(2, 3, dtype=torch.bool), dict(dtype="int"), TypeError, "x must be an integer tensor"),
    (torch.zeros(2, 3), dict(dtype=torch.bool), TypeError, "x must be a BoolTensor [batch, key], got dtype"),
    (torch.zeros(2, 3), dict(dtype=torch.int64), TypeError, "x must be a tensor of dtype int64 [batch, key]"),
    (torch.zeros(2, 3, dtype=torch.int8), dict(dtype=(torch.float16, torch.float32)), TypeError,
     "x must be float16 or float32 [batch, key], got dtype torch.int8"),
    (torch.zeros(3), dict(ndim=2), ValueError, "x must have shape [batch, key] (2 dims), got shape (3,)"),
    (torch.zeros(3), dict(min_ndim=2), ValueError, "x must have shape [batch, key] (at least 2 dims), got 1 dims"),
    (torch.zeros(2, 0), dict(ndim=2, nonempty=True), ValueError, "x must not be empty"),
    (torch.zeros(0, 2), dict(ndim=2, nonempty=True), ValueError, "x must not be empty"),
])
def test_check_tensor_refusals(value, kwargs, error, start):
    message = _message(error, lambda: check_tensor("x", value, "[batch, key]", **kwargs))
    assert message.startswith(start), message


def test_check_tensor_one_dim_is_singular():
    message = _message(ValueError, lambda: check_tensor("keep", torch.ones(2, 2, dtype=torch.bool), "[token]", ndim=1))
    assert message == "keep must have shape [token] (1 dim), got shape (2, 2)"


def test_check_floating_compares_with_the_layer_weights():
    x = torch.zeros(2, 3)
    assert check_floating("input", x) is x
    assert check_floating("input", x, torch.float32) is x
    message = _message(TypeError, lambda: check_floating("input", x, torch.float64))
    assert message == "input has dtype torch.float32 but the layer's weights are torch.float64; convert one of them"
    assert _message(TypeError, lambda: check_floating("input", x.long())).startswith(
        "input must be a floating-point tensor")
    assert _message(TypeError, lambda: check_floating("input", [1.0])).startswith("input must be a torch.Tensor")


def test_check_shape():
    x = torch.zeros(2, 5, 7)
    assert check_shape("key", x, (2, None, 7), "(batch, key, kdim)") is x
    message = _message(ValueError, lambda: check_shape("key", x, (2, None, 8), "(batch, key, kdim)"))
    assert message == "key must have shape (batch, key, kdim) = (2, *, 8), got (2, 5, 7)"
    _message(ValueError, lambda: check_shape("key", x, (2, None), "(batch, key)"))


# --- one convention -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: check_bool("arg", 1),
    lambda: check_int("arg", 1.5, 0),
    lambda: check_int("arg", -1, 0),
    lambda: check_int_tuple("arg", (1, -1), 2, 0),
    lambda: check_real("arg", "1", 0),
    lambda: check_real("arg", -1, 0),
    lambda: check_choice("arg", "c", ("a", "b")),
    lambda: check_type("arg", 1, str, "a str"),
    lambda: check_callable("arg", 1),
    lambda: check_tensor("arg", 1),
    lambda: check_tensor("arg", torch.zeros(2), ndim=2),
    lambda: check_floating("arg", torch.zeros(2), torch.float64),
    lambda: check_shape("arg", torch.zeros(2), (3,), "(n,)"),
])
def test_every_message_starts_with_the_argument_name(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert str(info.value).startswith("arg ")
