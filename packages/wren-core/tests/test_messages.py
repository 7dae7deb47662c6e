"""What a user reads: the progress bar and its summary line."""
import os
import time

import pytest

import wren
from wren.client import waiting


def nap(x):
    time.sleep(1.5)
    return x


def fail_on_two(x):
    if x == 2:
        raise ValueError("two")
    return x


@pytest.fixture
def show_bar(monkeypatch):
    monkeypatch.delenv("WREN_PROGRESSBAR", raising=False)


def test_progress_bar_on_without_a_terminal_redraws_and_summarises(show_bar, capsys):
    with wren.function_executor() as fexec:
        assert fexec.get_result(fexec.map(nap, [1, 2])) == [1, 2]
    err = capsys.readouterr().err
    # redrawn while no call had finished yet (elapsed time moving), then the summary
    assert err.count("0/2") >= 2, err
    assert "wren: 2/2 call(s) done, 0 failed," in err


def test_summary_counts_failures(show_bar, capsys):
    with wren.function_executor() as fexec:
        fexec.wait(fexec.map(fail_on_two, [1, 2, 3]), throw_except=False)
    assert "wren: 3/3 call(s) done, 1 failed," in capsys.readouterr().err


def test_no_bar_when_switched_off(monkeypatch, capsys):
    monkeypatch.setenv("WREN_PROGRESSBAR", "0")
    assert waiting.progress_bar(10, True) is None
    monkeypatch.delenv("WREN_PROGRESSBAR")
    assert waiting.progress_bar(10, False) is None
    bar = waiting.progress_bar(10, True)
    assert bar is not None
    bar.close()


def test_plot_returns_its_own_figures_and_leaves_matplotlib_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    backend = matplotlib.get_backend()
    with wren.function_executor() as fexec:
        futures = fexec.map(fail_on_two, range(6))
        fexec.wait(futures, throw_except=False)
        figs = fexec.plot(futures)
        job_key = futures[0].job_key
        written = fexec.plot(futures, dst=str(tmp_path / "run"))
    assert matplotlib.get_backend() == backend
    assert len(figs) == 2 and all(isinstance(f, Figure) for f in figs)
    title = figs[0].axes[0].get_title()
    assert job_key in title and "fail_on_two" in title and "1 failed" in title
    labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert "failed (1)" in labels
    assert not list(tmp_path.glob("wren-*.png"))  # nothing written without dst
    for fig in written:
        assert open(fig.wren_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


CELL = '''
def lookup(key):
    table = {"a": 1}
    return table[key]  # the line of the notebook cell
'''


def _cell_function():
    """A function as a notebook cell defines it: its file does not exist, linecache has it."""
    import linecache

    filename = "/tmp/ipykernel_4242/2771845623.py"
    lines = CELL.splitlines(keepends=True)
    linecache.cache[filename] = (len(CELL), None, lines, filename)
    namespace = {"__name__": "__main__"}
    exec(compile(CELL, filename, "exec"), namespace)
    return namespace["lookup"]


def test_remote_traceback_shows_the_cells_line_hides_wren_and_names_the_call():
    lookup = _cell_function()
    with wren.function_executor() as fexec:
        fut = fexec.call_async(lookup, "missing")
        with pytest.raises(KeyError) as info:
            fut.result()
    exc = info.value
    remote = exc.remote_traceback
    assert "return table[key]  # the line of the notebook cell" in remote
    assert "wren/worker" not in remote and "runtime.py" not in remote
    note = f"wren: call {fut.call_id} of job {fut.job_key}, lookup('missing')"
    assert note in getattr(exc, "__notes__", [note]) or note in remote
    import traceback

    shown = "".join(traceback.format_exception(exc))
    assert "the line of the notebook cell" in shown and note in shown


BIG = bytes(range(256)) * 6000  # ~1.5 MB of globals captured by value


def test_large_function_warns_before_sending_and_size_in_stats():
    from wren.client.submission import LargeFunctionWarning

    def uses_big(i):
        return len(BIG) + i

    with wren.function_executor(func_size_warning=1.0) as fexec:
        with pytest.warns(LargeFunctionWarning, match=r"1\.\d MiB.*put_cloudobject") as rec:
            fut = fexec.call_async(uses_big, 1)
        assert [w.filename for w in rec if w.category is LargeFunctionWarning] == [__file__], [str(w) for w in rec]
        assert fut.result() == len(BIG) + 1
        assert fut.stats["func_pickle_size_bytes"] > 1024 * 1024
        small = fexec.call_async(fail_on_two, 1)
        assert small.stats["func_pickle_size_bytes"] < 100 * 1024


def test_logging_no_double_lines_info_on_submit_end_clean(caplog):
    import logging

    wren_log = logging.getLogger("wren")
    for h in list(wren_log.handlers):
        wren_log.removeHandler(h)
    caplog.set_level(logging.INFO, logger="wren")
    with wren.function_executor(log_level="INFO") as fexec:
        # the root logger has a handler (caplog's, as a user's basicConfig): wren adds none
        assert wren_log.handlers == []
        fexec.wait(fexec.map(fail_on_two, [1, 2, 3]), throw_except=False)
        fexec.clean()
    text = caplog.text
    assert "3 call(s) of fail_on_two submitted" in text
    assert "3 call(s) of fail_on_two done, 1 failed" in text
    assert "cleaned " in text


def test_ctrl_c_says_how_many_calls_were_cancelled(caplog):
    import _thread
    import threading

    with wren.function_executor(max_workers=1) as fexec:
        futures = fexec.map(nap, range(4))
        threading.Timer(0.3, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            fexec.wait(futures)
        assert "interrupted: 4 call(s) not finished were cancelled" in caplog.text


SCRIPT = '''
import asyncio, sys
import wren, wren.concurrent
from wren.multiprocessing import Pool

def lookup(key):
    table = {"a": 1}
    return table[key]  # the user's failing line

how = sys.argv[1]
if how == "get_result":
    with wren.function_executor() as fexec:
        fexec.get_result(fexec.map(lookup, ["a", "missing"]))
elif how == "pool_map":
    with Pool(2) as pool:
        pool.map(lookup, ["a", "missing"])
elif how == "pool_apply_init":
    with Pool(1, initializer=int) as pool:
        pool.apply_async(lookup, ("missing",)).get(60)
elif how == "imap":
    with Pool(2) as pool:
        list(pool.imap(lookup, ["a", "missing"]))
elif how == "executor_map":
    with wren.concurrent.Executor() as ex:
        list(ex.map(lookup, ["a", "missing"]))
elif how == "submit":
    with wren.concurrent.Executor() as ex:
        ex.submit(lookup, key="missing").result()
elif how == "await":
    async def main():
        with wren.function_executor() as fexec:
            return await fexec.call_async(lookup, "missing")
    asyncio.run(main())
elif how == "get_result_async":
    async def main():
        with wren.function_executor() as fexec:
            return await fexec.get_result_async(fexec.map(lookup, ["missing"]))
    asyncio.run(main())
'''


@pytest.mark.parametrize("how", ["get_result", "pool_map", "pool_apply_init", "imap", "executor_map", "submit",
                                 "await", "get_result_async"])
def test_every_interface_shows_the_users_frames_and_names_the_call(tmp_path, how):
    """In a plain script, through each interface: the user's line, at most one line of wren
    (the one that re-raises; Python lists it), a KeyError, and a note naming lookup('missing')."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "WREN_PROGRESSBAR": "0"})
    err = out.stderr
    assert out.returncode == 1, err
    main = err.split("The above exception was the direct cause of the following exception:")[-1]
    assert main.rstrip().splitlines()[-2:][0].startswith("KeyError: 'missing'"), main
    assert "return table[key]  # the user's failing line" in main
    note = main.splitlines()[-1]
    assert note.startswith("wren: call ") and ("lookup('missing')" in note or "lookup(key='missing')" in note), main
    wren_frames = [line for line in main.splitlines() if line.strip().startswith("File") and "/wren/" in line]
    assert len(wren_frames) <= 1, main


def reserved_names(x, storage=None, id=None):
    return x, storage, id


def test_concurrent_executor_fills_none_of_the_users_parameters():
    import asyncio

    import wren.concurrent

    with wren.concurrent.Executor() as ex:
        assert ex.submit(reserved_names, 1).result() == (1, None, None)
        assert ex.submit(reserved_names, 1, id=5, storage="s").result() == (1, "s", 5)

        async def via_loop():
            return await asyncio.get_running_loop().run_in_executor(ex, reserved_names, 2)

        assert asyncio.run(via_loop()) == (2, None, None)
