"""Execution plots: per-call timeline and concurrency histogram (needs matplotlib).

They are drawn on :class:`matplotlib.figure.Figure` objects of their own: the process's
matplotlib backend and pyplot's current figure are never touched, so a notebook's own charts
keep working after ``fexec.plot()``.
"""
from __future__ import annotations

import io
import os
import sys
from typing import Any

from wren.errors import WrenError


def _rows(fs: list[Any]) -> list[tuple[float, float, float, float, float, bool, bool]]:
    rows = []
    for f in fs:
        s = f.stats
        if "worker_func_start_tstamp" not in s:
            continue
        rows.append(
            (
                s.get("host_submit_tstamp", s["worker_start_tstamp"]),
                s["worker_start_tstamp"],
                s["worker_func_start_tstamp"],
                s.get("worker_func_end_tstamp", s["worker_func_start_tstamp"]),
                s.get("host_status_done_tstamp", s.get("worker_end_tstamp", s["worker_func_start_tstamp"])),
                bool(s.get("worker_cold_start")),
                bool(f.error),
            )
        )
    return rows


def describe_jobs(fs: list[Any], functions: dict[str, str]) -> str:
    """``job EXEC/M000 (square)``, or the first jobs of several."""
    keys = list(dict.fromkeys(f.job_key for f in fs))
    names = [f"{k} ({functions[k]})" if k in functions else k for k in keys]
    label = "job " if len(names) == 1 else "jobs "
    return label + ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def plot_futures(fs: list[Any], dst: str | None, functions: dict[str, str] | None = None) -> list[Any]:
    """Draw the timeline and the histogram of ``fs``; returns the two Figures. With ``dst``,
    writes ``<dst>_timeline.png`` and ``<dst>_histogram.png`` too (their paths are in each
    figure's ``wren_path``). In a notebook the figures are shown inline."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise WrenError("plot() needs matplotlib: pip install 'wren-core[plot]'") from None
    rows = _rows(fs)
    if not rows:
        raise WrenError("no call has timing data to plot yet")
    what = describe_jobs(fs, functions or {})
    t0 = min(r[0] for r in rows)
    rows.sort(key=lambda r: r[0])
    failed = sum(1 for r in rows if r[6])

    timeline = Figure(figsize=(10, 6), dpi=100)
    ax = timeline.subplots()
    ys = list(range(len(rows)))
    thick = max(0.5, min(4.0, 400 / max(1, len(rows))))
    ax.hlines(ys, [r[0] - t0 for r in rows], [r[2] - t0 for r in rows], colors="0.75", lw=thick,
              label="waiting (submitted to started)")
    ok = [(i, r) for i, r in enumerate(rows) if not r[6]]
    bad = [(i, r) for i, r in enumerate(rows) if r[6]]
    if ok:
        ax.hlines([i for i, _ in ok], [r[2] - t0 for _, r in ok], [r[3] - t0 for _, r in ok],
                  colors="tab:blue", lw=thick, label="running (started to finished)")
    if bad:
        ax.hlines([i for i, _ in bad], [r[2] - t0 for _, r in bad], [r[3] - t0 for _, r in bad],
                  colors="tab:red", lw=thick)
        ax.scatter([r[3] - t0 for _, r in bad], [i for i, _ in bad], s=30, marker="X", c="tab:red",
                   zorder=4, label=f"failed ({len(bad)})")
    ax.scatter([r[4] - t0 for r in rows], ys, s=4, c="tab:orange", zorder=3, label="result on client")
    cold = [(r[2] - t0, i) for i, r in enumerate(rows) if r[5]]
    if cold:
        ax.scatter([c[0] for c in cold], [c[1] for c in cold], s=40, marker="x", c="0.2", label="cold start")
    ax.set_xlabel("seconds since the first call was submitted")
    ax.set_ylabel("call (in submission order)")
    ax.set_title(f"Execution timeline of {what}: {len(rows)} calls" + (f", {failed} failed" if failed else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    timeline.tight_layout()

    end = max(r[4] for r in rows) - t0
    bins = max(10, min(200, len(rows)))
    step = end / bins if end > 0 else 1.0
    xs = [i * step for i in range(bins + 1)]
    running = [sum(1 for r in rows if r[2] - t0 <= x < r[3] - t0) for x in xs]
    histogram = Figure(figsize=(10, 4), dpi=100)
    ax = histogram.subplots()
    ax.fill_between(xs, running, step="post", color="tab:blue", alpha=0.6)
    ax.set_xlabel("seconds since the first call was submitted")
    ax.set_ylabel("calls running")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Concurrent calls of {what} (peak {max(running)})")
    ax.grid(alpha=0.3)
    histogram.tight_layout()

    figures = [timeline, histogram]
    if dst is not None:
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        for fig, suffix in zip(figures, ("timeline", "histogram"), strict=True):
            fig.wren_path = f"{dst}_{suffix}.png"  # type: ignore[attr-defined]
            fig.savefig(fig.wren_path)  # type: ignore[attr-defined]
    show_inline(figures)
    return figures


def show_inline(figures: list[Any]) -> None:
    """Display ``figures`` as PNG images when running in a Jupyter kernel (no-op otherwise)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    if shell is None or not hasattr(shell, "kernel"):
        return
    from IPython.display import Image, display

    for fig in figures:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        display(Image(data=buf.getvalue(), format="png"))
