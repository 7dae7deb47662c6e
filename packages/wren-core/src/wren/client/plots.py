"""Execution plots: per-call timeline and concurrency histogram (needs matplotlib)."""
from __future__ import annotations

import os
from typing import Any

from wren.errors import WrenError


def plot_futures(fs: list[Any], dst: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise WrenError("plot() needs matplotlib: pip install 'wren-core[plot]'") from None
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
            )
        )
    if not rows:
        raise WrenError("no call has timing data to plot yet")
    t0 = min(r[0] for r in rows)
    rows.sort(key=lambda r: r[0])
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    timeline, histogram = f"{dst}_timeline.png", f"{dst}_histogram.png"

    fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    ys = list(range(len(rows)))
    thick = max(0.5, min(4.0, 400 / max(1, len(rows))))
    ax.hlines(ys, [r[0] - t0 for r in rows], [r[2] - t0 for r in rows], colors="0.75", lw=thick,
              label="waiting (submitted to started)")
    ax.hlines(ys, [r[2] - t0 for r in rows], [r[3] - t0 for r in rows], colors="tab:blue", lw=thick,
              label="running (started to finished)")
    ax.scatter([r[4] - t0 for r in rows], ys, s=4, c="tab:orange", zorder=3, label="result on client")
    cold = [(r[2] - t0, i) for i, r in enumerate(rows) if r[5]]
    if cold:
        ax.scatter([c[0] for c in cold], [c[1] for c in cold], s=40, marker="x", c="tab:red", label="cold start")
    ax.set_xlabel("seconds since the first call was submitted")
    ax.set_ylabel("call (in submission order)")
    ax.set_title(f"Execution timeline: {len(rows)} calls")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(timeline)
    plt.close(fig)

    end = max(r[4] for r in rows) - t0
    bins = max(10, min(200, len(rows)))
    step = end / bins if end > 0 else 1.0
    xs = [i * step for i in range(bins + 1)]
    running = [sum(1 for r in rows if r[2] - t0 <= x < r[3] - t0) for x in xs]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.fill_between(xs, running, step="post", color="tab:blue", alpha=0.6)
    ax.set_xlabel("seconds since the first call was submitted")
    ax.set_ylabel("calls running")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Concurrent calls over time (peak {max(running)})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(histogram)
    plt.close(fig)
    return [timeline, histogram]
