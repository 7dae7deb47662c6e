"""Dict items naming the *args/**kwargs parameters bind as Python binds the call those names
spell (as Lithops takes them); lists are not spread (the deliberate difference from PyWren 1.x)."""
from __future__ import annotations

import pytest

import wren
from wren.errors import InvalidArgumentBindingError


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def varargs(a, *rest, k=0, **opts):
    return a, rest, k, opts


def only_kwargs(**options):
    return options


def with_id(x, *more, id):  # noqa: A002 - the reserved parameter
    return x, more, id


def test_dict_items_name_var_parameters(fexec):
    items = [
        {"a": 1, "rest": (2, 3)},
        {"a": 1, "opts": {"x": 2}},
        {"a": 1, "y": 3},
        {"a": 1, "rest": [2], "k": 5, "opts": {"z": 1}},
        {"a": 1, "rest": [2], "opts": {"z": 1}, "w": 4},
    ]
    assert fexec.get_result(fexec.map(varargs, items)) == [
        (1, (2, 3), 0, {}),
        (1, (), 0, {"x": 2}),
        (1, (), 0, {"y": 3}),
        (1, (2,), 5, {"z": 1}),
        (1, (2,), 0, {"w": 4, "z": 1}),
    ]


def test_a_kwargs_dict_item(fexec):
    assert fexec.get_result(fexec.map(only_kwargs, [{"options": {"a": 1}}, {"b": 2}])) == [{"a": 1}, {"b": 2}]


def test_reserved_parameters_still_filled(fexec):
    assert fexec.get_result(fexec.map(with_id, [{"x": 1, "more": (2,)}, (5,)])) == [(1, (2,), 0), (5, (), 1)]


def test_missing_parameter_before_var_positional_is_reported(fexec):
    with pytest.raises(InvalidArgumentBindingError, match="'a'"):
        fexec.map(varargs, [{"rest": (1, 2)}])


def test_given_twice_is_reported(fexec):
    with pytest.raises(InvalidArgumentBindingError, match="twice"):
        fexec.map(varargs, [{"a": 1, "x": 1, "opts": {"x": 2}}])


def test_lists_are_not_spread(fexec):
    def two(a, b):
        return a + b

    with pytest.raises(InvalidArgumentBindingError, match="make it a tuple"):
        fexec.map(two, [[1, 2]])
    assert fexec.get_result(fexec.map(two, [(1, 2)])) == [3]


def test_binding_follows_a_function_whose_defaults_or_code_change(fexec):
    """The client reuses a function's signature between calls while nothing it depends on
    changed (call_async in a loop): new defaults or new code are seen at the next call."""
    def add(a, b):
        return a + b

    with pytest.raises(InvalidArgumentBindingError):
        fexec.call_async(add, (1,))
    add.__defaults__ = (10,)
    assert fexec.get_result(fexec.call_async(add, (1,))) == 11
    add.__code__ = (lambda a: a * 3).__code__
    with pytest.raises(InvalidArgumentBindingError):
        fexec.call_async(add, (1, 2))
    assert fexec.get_result(fexec.call_async(add, (2,))) == 6
