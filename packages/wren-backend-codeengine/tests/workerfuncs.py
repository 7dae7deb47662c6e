"""Functions the tests run in job instances: standard library only, so that wren ships this
module's source to the runtime and nothing else needs installing there."""
from __future__ import annotations

import os


def square(x):
    return x * x


def noop(x):
    return x


def env_of(names):
    return {n: os.environ.get(n) for n in names}


def square_where(x):
    """x * x and the array index that ran it."""
    return x * x, os.environ.get("JOB_INDEX")
