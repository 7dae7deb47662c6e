"""A clean environment for a test session: no user config, a fresh ``~/.wren``."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping


@contextlib.contextmanager
def isolated_environment(home: os.PathLike | str, set_vars: Mapping[str, str] | None = None,
                         unset: Iterable[str] = ()) -> Iterator[None]:
    """``HOME`` -> ``home`` (so ``~/.wren`` is fresh), no ``WREN_CONFIG_FILE``, the variables
    in ``unset`` removed and those in ``set_vars`` set; everything restored afterwards.
    Progress bars are off (``WREN_PROGRESSBAR=0``) unless ``set_vars`` says otherwise: they are
    on by default even without a terminal, and test output stays clean."""
    set_vars = {"WREN_PROGRESSBAR": "0", **{k: str(v) for k, v in (set_vars or {}).items()}}
    unset = list(unset)
    names = {"HOME", "WREN_CONFIG_FILE", *set_vars, *unset}
    saved = {k: os.environ.get(k) for k in names}
    os.environ["HOME"] = str(home)
    for k in ("WREN_CONFIG_FILE", *unset):
        os.environ.pop(k, None)
    os.environ.update(set_vars)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
