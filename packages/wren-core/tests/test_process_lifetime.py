"""Workers never outlive their client, and a worker's death is seen by the process, not by
end-of-file: a call's children that keep the worker's socket open change nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import wren


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def spawn_and_die(path):
    # a child that inherits every descriptor of the worker, its socket to the client included
    child = subprocess.Popen(["sleep", "300"], close_fds=False)
    with open(path, "w") as f:
        f.write(str(child.pid))
    os._exit(3)


def test_a_dead_worker_is_reported_although_its_child_keeps_the_socket_open(tmp_path):
    path = str(tmp_path / "child.pid")
    with wren.function_executor(max_workers=1) as ex:
        fut = ex.call_async(spawn_and_die, path)
        t0 = time.monotonic()
        with pytest.raises(wren.WorkerDiedError, match="exited with status 3"):
            ex.get_result(fut, timeout=60)
        assert time.monotonic() - t0 < 30
        child = int(open(path).read())
        assert _wait_gone([child], 10) == [], "the call's child outlived its dead worker"
        assert ex.get_result(ex.map(abs, [-1, -2])) == [1, 2]  # the pool replaced the worker


CLIENT = textwrap.dedent("""
    import os, subprocess, sys, time
    import wren

    def hang(i, folder):
        child = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(folder, f"{os.getpid()}-{child.pid}"), "w"):
            pass
        time.sleep(300)

    fexec = wren.function_executor(max_workers=2)
    fexec.map(hang, [(0, sys.argv[1]), (1, sys.argv[1])])
    fexec.wait(timeout=300)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_workers_and_their_children_die_with_the_client(tmp_path, sig):
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    folder = tmp_path / "pids"
    folder.mkdir()
    client = subprocess.Popen([sys.executable, str(script), str(folder)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        names = os.listdir(folder)
        assert len(names) == 2, "the calls did not start"
        pids = [int(p) for name in names for p in name.split("-")]
        assert all(_alive(p) for p in pids)
        os.kill(client.pid, sig)
        client.wait(30)
        assert _wait_gone(pids, 30) == [], f"still running after the client got {sig.name}"
    finally:
        if client.poll() is None:
            client.kill()


def test_a_killed_template_fails_the_running_call_and_the_pool_recovers():
    """The template forks the workers, which die with it: a template killed by someone fails
    the call its worker was running (the message says why) and a new template takes over."""
    from wren.worker.pool import WorkerPool

    with wren.function_executor(max_workers=1) as ex:
        assert ex.get_result(ex.call_async(abs, -1)) == 1
        slow = ex.call_async(time.sleep, 60)
        deadline = time.monotonic() + 30
        while slow.status != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        pool = WorkerPool._pools[ex.compute.size]
        worker = next(w for w in pool._workers if w.inflight and w.inflight[0].job.job_key == slow.job_key)
        deadline = time.monotonic() + 30
        while worker.pid is None and time.monotonic() < deadline:
            time.sleep(0.02)
        template = pool._template
        os.kill(template.proc.pid, signal.SIGKILL)
        with pytest.raises(wren.WorkerDiedError, match="template process"):
            ex.get_result(slow, timeout=60)
        assert _wait_gone([worker.pid], 30) == [], "a worker outlived its template"
        assert ex.get_result(ex.map(abs, [-1, -2])) == [1, 2]
        assert pool._template is not template


SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mymarker  # the user's state: a module only this process imported
    with open(sys.argv[1], "a") as f:
        f.write("ran\\n")
    import wren

    def probe(_):
        return "mymarker" in sys.modules

    fexec = wren.function_executor()
    print(fexec.get_result(fexec.map(probe, range(4))))
""")


def test_workers_neither_rerun_the_script_nor_inherit_its_state(tmp_path):
    """A script without an ``if __name__ == "__main__"`` guard runs once (workers are not
    started from it), and its workers lack what the script imported (they are not its forks)."""
    (tmp_path / "mymarker.py").write_text("")
    script = tmp_path / "client.py"
    script.write_text(SCRIPT)
    runs = tmp_path / "runs.txt"
    out = subprocess.run([sys.executable, str(script), str(runs)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert runs.read_text() == "ran\n"
    assert out.stdout.strip().splitlines()[-1] == "[False, False, False, False]"


def test_files_in_the_working_directory_never_shadow_the_standard_library(tmp_path):
    """A random.py or concurrent.py in the folder the client runs from (a user's scratch
    folder) is not imported by the workers in place of the standard library's."""
    for name in ("random", "concurrent", "queue", "selectors", "pickle", "hashlib", "struct", "json", "typing", "dataclasses"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the user folder shadowed the stdlib')\n")
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.remove(sys.path[0]); import wren\n"
                          "with wren.function_executor() as fexec: print(fexec.get_result(fexec.map(abs, [-1, -2])))"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "WREN_PROGRESSBAR": "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[1, 2]"
