"""Functions the conformance suites run on workers (importable without pytest)."""
from __future__ import annotations

import collections
import os
import time


class CustomError(Exception):
    """An exception type of the user's own."""


def double(x):
    return x * 2


def add(a, b=0, c=0):
    return a + b + c


def count_args(*args, **kwargs):
    return (len(args), sorted(kwargs))


def fail(x):
    raise CustomError(f"failed on {x}")


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def getenv(name):
    return os.environ.get(name)


def with_id(x, id):  # noqa: A002 - the reserved name
    return (x, id)


def with_storage(key, storage):
    storage.put_object(storage.bucket, key, b"written by a worker")
    return storage.get_object(storage.bucket, key).decode()


def die(code):
    os._exit(code)


def length(data):
    return len(data)


def total(results):
    return sum(results)


def count_words(obj):
    """Word count of a partition (``obj``: the partitioner's object, read line by line)."""
    c: collections.Counter = collections.Counter()
    for line in obj.data_stream:
        c.update(line.decode().split())
    return c


def merge_counts(results):
    """The reducer of :func:`count_words`."""
    total: collections.Counter = collections.Counter()
    for r in results:
        total.update(r)
    return total


def printer(x):
    print(f"hello from call {x}")
    return x
