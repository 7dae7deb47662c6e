"""pytest plugin: a test session fails when processes it started are still running at its end.

Loaded by every test session of the noxfile (``-p wren_testsupport.leaks``). At its start the
session puts a marker of its own in its environment (``WREN_LEAK_MARK``), which every process
it starts inherits. After the last test (session fixtures, i.e. the servers of this folder, are
stopped by then) it waits up to ``WREN_LEAK_GRACE`` seconds (default 15) for the leftovers to
exit, then fails the session and lists those still running. Leftovers are the test process's
descendants and every other process carrying the session's marker: one whose parent ended
before it was re-parented (to init or a subreaper) and is nobody's descendant any more, but it
still carries the marker (a process started with an environment of its own does not: those
are only seen while they are descendants). wren's own warm pool workers (``python -m
wren.worker.poolworker``, and the pool workers those start) are the exception: they exit when
this process does, and the noxfile's ``summary`` session checks that they did (it looks for any
process still carrying the run's ``WREN_TEST_RUN`` marker).
"""
from __future__ import annotations

import os
import time
import uuid

import pytest

#: the environment variable carrying the session's marker (see the module docstring)
MARK_VAR = "WREN_LEAK_MARK"


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(entry)] = (int(rest[1]), rest[0])
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def carrying(name: str, value: str) -> list[int]:
    """Live (non-zombie) processes other than this one whose environment, as they were
    started, has ``name=value`` (Linux /proc; processes of other users are not readable)."""
    needle = f"{name}={value}".encode()
    found = []
    for pid, (_, state) in _processes().items():
        if pid == os.getpid() or state in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Live (non-zombie) descendants of ``pid``."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for p, (parent, _) in procs.items():
        children.setdefault(parent, []).append(p)
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if procs.get(p, (0, "Z"))[1] not in ("Z", "X"):
            found.append(p)
        todo.extend(children.get(p, []))
    return sorted(found)


def leftovers(pid: int | None = None, mark: str | None = None) -> list[int]:
    """Descendants of ``pid`` (default: this process) other than its own pool workers and the
    pool workers they started (a call that made an executor of its own): each dies with its
    parent (parent-death signal), so all of them end with this process. With ``mark``, also
    every process carrying ``WREN_LEAK_MARK=mark`` that has left the process tree."""
    me = os.getpid() if pid is None else pid
    procs = _processes()
    tree = descendants(me)
    gone = set(carrying(MARK_VAR, mark)) - set(tree) - {me} if mark else set()

    def pool_worker_tree(p: int) -> bool:
        while p != me:
            if "wren.worker.poolworker" not in cmdline(p):
                return False
            p = procs.get(p, (me, ""))[0]
        return True

    return sorted([p for p in tree if not pool_worker_tree(p)] + list(gone))


def pytest_configure(config: pytest.Config) -> None:
    # before any fixture starts anything: every process of this session inherits the marker
    # (a session run by a test of another session gets a marker of its own)
    os.environ[MARK_VAR] = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.path.isdir("/proc"):
        return
    mark = os.environ.get(MARK_VAR)
    deadline = time.monotonic() + float(os.environ.get("WREN_LEAK_GRACE", "15"))
    left = leftovers(mark=mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftovers(mark=mark)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    tree, procs = set(descendants(os.getpid())), _processes()
    lines = [f"  pid {p}: {cmdline(p)[:200]}"
             + ("" if p in tree else f"  (left the process tree; parent pid {procs.get(p, ('?',))[0]})") for p in left]
    text = "\n".join([f"{len(left)} process(es) started by this test session are still running:", *lines])
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", "processes left running", red=True)
        reporter.write_line(text)
    else:  # pragma: no cover
        print(text)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
