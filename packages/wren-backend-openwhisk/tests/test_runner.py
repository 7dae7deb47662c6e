"""The emulator's process runner: no action process (nor anything it started: its warm pool's
template and workers, the calls) outlives the emulator, however it ends: closed in the middle
of a call, its process killed, or the action deleted while its process was starting.

Every test marks its action processes with an environment variable of its own (the runner
passes its environment on) and looks for processes carrying the mark in /proc, so that one
re-parented to init (its parent gone) is found too. These tests make their own
:class:`ProcessRunner`, whichever runner the session uses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

import wren
from wren_backend_openwhisk import OpenWhiskClient
from wren_backend_openwhisk.backend import default_runtime_name
from wren_backend_openwhisk.client import BasicAuth
from wren_testsupport.leaks import carrying, cmdline

from emulator import OpenWhiskEmulator, ProcessRunner

MARK = "WREN_TEST_ACTION_MARK"
KEY = f"{uuid.uuid4()}:{uuid.uuid4().hex}"
EMULATOR = os.path.join(os.path.dirname(__file__), "emulator.py")
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="looks for processes in Linux's /proc")


def sleeper(path):
    """A call that says it started (its pid in ``path``), then outlasts any test."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


@pytest.fixture
def mark(monkeypatch):
    """This test's mark, in the environment every action process started from now on gets."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARK, value)
    return value


def _still_running(value: str, grace: float = 30.0) -> list[str]:
    """The processes carrying the mark after they had ``grace`` seconds to end (signals are
    delivered, and processes end, a moment after the kill)."""
    deadline = time.monotonic() + grace
    left = carrying(MARK, value)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = carrying(MARK, value)
    return [f"pid {p}: {cmdline(p)[:160]}" for p in left]


def _wait_for(predicate, what: str, within: float = 120.0):
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within:g} s")
        time.sleep(0.05)


def test_no_action_process_outlives_the_emulators_close_in_the_middle_of_a_call(mark, cos_section, tmp_path):
    started = tmp_path / "started"
    emu = OpenWhiskEmulator({KEY: "guest"}, runner=ProcessRunner()).start()
    cfg = {"wren": {"backend": "openwhisk", "storage": "ibm_cos", "monitor_interval": 0.2},
           "openwhisk": {"endpoint": emu.url, "namespace": "guest", "api_key": KEY, "runtime": default_runtime_name(),
                         "backoff_base": 0.02, "backoff_max": 0.5},
           "ibm_cos": cos_section}
    ex = wren.function_executor(config=cfg)
    try:
        ex.call_async(sleeper, str(started))
        _wait_for(lambda: started.exists() and started.read_text(), "the call's start")
        running = carrying(MARK, mark)
        # the action process, its warm pool's template, the pool worker running the call
        assert int(started.read_text()) in running and len(running) >= 3, running
        emu.stop()
        assert _still_running(mark) == []
    finally:
        emu.stop()
        ex.close(clean=False)


def test_no_action_process_outlives_the_emulators_process(mark):
    """The emulator's process killed (SIGKILL: nothing of its own runs): its action processes
    end by their parent-death signal, and what they started with them."""
    emu = subprocess.Popen([sys.executable, EMULATOR, "--runner", "process", "--key", KEY],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = emu.stdout.readline()
        assert line.startswith("READY "), line
        client = OpenWhiskClient(f"http://127.0.0.1:{line.split()[1]}", "guest", BasicAuth(KEY))
        client.put_action("lifetime", "img", 256, 60)
        # the action process answers, then starts its warm pool (template and workers)
        assert "python" in client.invoke_blocking("lifetime", {"wren_metadata": True})
        client.close()
        # besides the emulator: the action process and its warm pool's template (at least)
        _wait_for(lambda: len(set(carrying(MARK, mark)) - {emu.pid}) >= 2, "the action process's warm pool")
        emu.kill()
        emu.wait()
        assert _still_running(mark) == []
    finally:
        emu.kill()
        emu.wait()


class GatedRunner(ProcessRunner):
    """Starts an action process only when the test says so."""

    def __init__(self):
        super().__init__()
        self.starting, self.go = threading.Event(), threading.Event()

    def start_action(self, action, env):
        self.starting.set()
        self.go.wait(60)
        return super().start_action(action, env)


def test_an_action_deleted_while_its_process_starts_has_it_stopped_after_the_activation(mark):
    runner = GatedRunner()
    with OpenWhiskEmulator({KEY: "guest"}, runner=runner) as emu:
        client = OpenWhiskClient(emu.url, "guest", BasicAuth(KEY))
        client.put_action("deleted", "img", 256, 60)
        aid = client.invoke("deleted", json.dumps({"wren_metadata": True}).encode())
        _wait_for(runner.starting.is_set, "the cold start")
        assert client.delete_action("deleted")
        runner.go.set()
        _wait_for(lambda: client.get_activation(aid) is not None, "the activation's end")
        assert client.get_activation(aid)["response"]["success"]
        client.close()
        # the emulator still runs: the process was stopped after its activation, not at close
        assert _still_running(mark) == []
        assert runner.procs == []


def test_nothing_starts_once_the_runner_is_closed(mark):
    runner = ProcessRunner()
    runner.close()
    with pytest.raises(RuntimeError, match="the process runner is closed"):
        runner.start_action({"name": "late"}, {})
    assert carrying(MARK, mark) == [] and runner.procs == []


@pytest.mark.parametrize("launch, error", [("import time; time.sleep(600)", "did not answer within 1 s"),
                                           ("import sys; sys.exit(3)", "exited with 3")])
def test_an_action_process_that_does_not_answer_is_not_left_behind(mark, monkeypatch, launch, error):
    import emulator

    monkeypatch.setattr(emulator, "_LAUNCH", launch)
    runner = ProcessRunner(start_timeout=1)
    try:
        with pytest.raises(RuntimeError, match=error):
            runner.start_action({"name": "mute"}, {})
        assert runner.procs == []
        assert _still_running(mark) == []
    finally:
        runner.close()
