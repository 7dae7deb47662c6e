"""examples/notebook.ipynb run in a real Jupyter kernel (nbclient): the progress widget, the
inline plots, a later plain matplotlib plot, and a remote error showing the cell's line.
Needs the notebook tools (``nox -s notebook`` installs them); skipped, saying so, without."""
import json
import os
import pathlib

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[3] / "examples" / "notebook.ipynb"


def test_example_notebook_runs_with_widget_plots_and_traceback(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed: run `nox -s notebook`")
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed: run `nox -s notebook`")
    pytest.importorskip("ipykernel", reason="ipykernel not installed: run `nox -s notebook`")
    if not NOTEBOOK.exists():
        pytest.skip(f"{NOTEBOOK} is not in this checkout")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_keep = os.environ.pop("WREN_PROGRESSBAR", None)  # the notebook shows its bar
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if env_keep is not None:
            os.environ["WREN_PROGRESSBAR"] = env_keep
    out_path = os.environ.get("WREN_NOTEBOOK_OUT")
    if out_path:  # nox -s notebook keeps the executed notebook as an artifact
        nbformat.write(nb, out_path)
    code = [c for c in nb.cells if c.cell_type == "code"]

    def outputs(i):
        return json.dumps(code[i].outputs)

    assert "application/vnd.jupyter.widget-view+json" in outputs(1) or "call" in outputs(1)
    assert "wren: 24/24 call(s) done, 0 failed" in outputs(1)
    assert sum(1 for o in code[2].outputs if "image/png" in o.get("data", {})) >= 2
    assert "Execution timeline of job" in outputs(2) and "work" in outputs(2)
    assert any("image/png" in o.get("data", {}) for o in code[3].outputs)  # the user's own plot
    assert "this line shows in the remote traceback" in outputs(4)
    assert "KeyError" in outputs(4) and "wren: call" in outputs(4)
    assert "[0, 1, 4, 9]" in outputs(5)
