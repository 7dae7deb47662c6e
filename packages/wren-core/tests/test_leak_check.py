"""The test run's own check: a pytest session that leaves a process running fails
(testsupport's ``wren_testsupport.leaks`` plugin, loaded by every nox test session)."""
import os
import subprocess
import sys


def _pytest(tmp_path, body):
    (tmp_path / "test_inner.py").write_text(body)
    env = dict(os.environ, WREN_LEAK_GRACE="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "wren_testsupport.leaks", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_inner.py")], capture_output=True, text=True, env=env, timeout=120)


def test_a_session_that_leaves_a_process_running_fails(tmp_path):
    r = _pytest(tmp_path, "import subprocess\n\ndef test_leaks():\n    subprocess.Popen(['sleep', '4'])\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "still running" in r.stdout and "sleep 4" in r.stdout


def test_a_clean_session_passes_even_with_warm_pool_workers(tmp_path):
    body = ("import subprocess, wren\n\ndef test_clean():\n    subprocess.run(['true'], check=True)\n"
            "    with wren.function_executor() as ex:\n        assert ex.get_result(ex.call_async(abs, -3)) == 3\n")
    r = _pytest(tmp_path, body)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "still running" not in r.stdout


def test_a_process_that_left_the_process_tree_is_reported(tmp_path):
    """A process whose parent ended before it (re-parented to init or a subreaper) is no
    descendant of the session any more; it still carries the session's marker."""
    body = ("import subprocess\n\ndef test_leaks():\n"
            "    subprocess.run(['sh', '-c', 'sleep 5 >/dev/null 2>&1 &'], check=True)\n")
    r = _pytest(tmp_path, body)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "still running" in r.stdout and "sleep 5" in r.stdout
    assert "left the process tree" in r.stdout
