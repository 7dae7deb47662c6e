"""What a user reads: the progress bar and its summary line."""
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
