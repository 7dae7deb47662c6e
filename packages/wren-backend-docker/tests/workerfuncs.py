"""Functions the tests run in containers: standard library only, so that wren ships this
module's source to the runtime and nothing else needs installing there."""
from __future__ import annotations


def hog(mb):
    data = b"x" * (mb * 1024 * 1024)  # touches every page
    return len(data)
