"""Data partitioning for functions with an ``obj`` parameter (the seam; see the storage issue)."""
from __future__ import annotations

from typing import Any

from wren.errors import InvalidInputError


def partition(executor: Any, iterdata: Any, extra_args: Any, chunk_size: int | None, chunk_n: int | None) -> tuple[list, list, list]:
    raise InvalidInputError(
        "functions with an 'obj' parameter (object partitioning) are not supported yet; "
        "rename the parameter"
    )


def make_obj(spec: dict[str, Any], storage: Any, job: dict[str, Any]) -> Any:
    raise InvalidInputError("object partitioning is not supported yet")
