"""A function submitted again is packed again unless nothing it captures can have changed
(wren.client.packages): a rebound global, an object changed in place, new defaults all reach
the next call."""
from __future__ import annotations

import pytest

import wren
from wren.client.packages import PackageCache, fingerprint


@pytest.fixture
def fexec():
    with wren.function_executor() as ex:
        yield ex


def script_function(source, name):
    """A function defined as in the user's script (pickled by value, nothing to ship)."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)  # noqa: S102 - the test's own source
    return namespace, namespace[name]


def test_a_rebound_global_reaches_the_next_call(fexec):
    ns, add = script_function("LIMIT = 3\ndef add(x):\n    return x + LIMIT\n", "add")
    assert fingerprint(add) is not None  # the reusable kind
    assert fexec.get_result(fexec.call_async(add, 1)) == 4
    assert fexec.get_result(fexec.call_async(add, 1)) == 4
    ns["LIMIT"] = 10
    assert fexec.get_result(fexec.call_async(add, 1)) == 11
    add.__defaults__ = (5,)
    assert fexec.get_result(fexec.call_async(add)) == 15


def test_a_global_changed_in_place_reaches_the_next_call(fexec):
    ns, total = script_function("ITEMS = [1]\ndef total(x):\n    return x + sum(ITEMS)\n", "total")
    assert fingerprint(total) is None  # a list may change in place: packed every time
    assert fexec.get_result(fexec.call_async(total, 1)) == 2
    ns["ITEMS"].append(5)
    assert fexec.get_result(fexec.call_async(total, 1)) == 7


def test_only_provably_unchanged_packages_are_reused():
    ns, add = script_function("import math\nLIMIT = 3\ndef add(x):\n    return math.floor(x) + LIMIT\n", "add")
    cache, packed = PackageCache(), []

    def pack():
        packed.append(1)
        return (b"package %d" % len(packed), [])

    first = cache.package(add, ((), None), pack)
    assert cache.package(add, ((), None), pack) is first and len(packed) == 1
    assert cache.package(add, (None, None), pack) is not first  # other options
    ns["LIMIT"] = 4
    assert cache.package(add, (None, None), pack) is not first and len(packed) == 3
    closure = (lambda y: (lambda x: x + y))(1)
    _, uses_helper = script_function("def helper():\n    return 1\ndef f():\n    return helper()\n", "f")
    assert fingerprint(closure) is None and fingerprint(uses_helper) is None  # by value: may change
    shipped = []
    cache.package(add, ("ships",), lambda: (b"x", ["helpers"]))
    cache.package(add, ("ships",), lambda: shipped.append(1) or (b"x", ["helpers"]))
    assert shipped == [1]  # local modules shipped: packed every time
