"""Every notebook runs on its experiment's tiny variant, in a real kernel.

Convention: ``notebooks/<name>.ipynb`` reads the results of ``configs/<name>.py``; its tiny
variant ``configs/<name>.py:tiny`` is run here into a temporary workdir, then the notebook
is executed with ``ODEFORMER_WORKDIR`` pointing there and ``ODEFORMER_FIGURE`` naming the
figure file it must write (by default the notebook reads the committed ``../results/<name>.csv``, or
``../runs/<name>`` where no table is committed, and writes ``../docs/figures/<name>.png``, the figure of
docs/results.md).
"""

import importlib.util
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from odeformer.experiment import results
from odeformer.experiment.runner import run_sweep

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _config(name: str, variant: str = ""):
    path = REPO / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _record_a_failed_run(workdir):
    """A failed run as the runner records one (config.json, a row without metrics), so every
    notebook is run on a table that holds a failure: it must read the ok runs only."""
    first = sorted((workdir / "runs").glob("*/result.json"))[0]
    row = json.loads(first.read_text())
    failed = {k: v for k, v in row.items() if "." in k or k == "params"}
    failed.update(run_id="f" * 12, status="failed: recorded by tests/test_notebooks.py")
    (workdir / "runs" / failed["run_id"]).mkdir()
    shutil.copy(first.parent / "config.json", workdir / "runs" / failed["run_id"] / "config.json")
    results.record(workdir, failed)


def test_every_notebook_has_a_config_a_tiny_variant_and_an_index_entry():
    index = (REPO / "notebooks" / "README.md").read_text()
    assert NOTEBOOKS, "no notebooks found"
    for notebook in NOTEBOOKS:
        name = notebook.stem
        assert (REPO / "configs" / f"{name}.py").exists(), name
        assert _config(name, "tiny").name == f"{name}_tiny", name
        assert f"{name}.ipynb" in index, f"notebooks/README.md does not list {name}.ipynb"
        cells = nbformat.read(notebook, as_version=4).cells
        verdicts = [c for c in cells if c.cell_type == "markdown" and "**Verdict" in c.source]
        assert verdicts, f"{name}.ipynb has no markdown cell with a **Verdict"
        assert not any(c.get("outputs") for c in cells if c.cell_type == "code"), \
            f"{name}.ipynb is committed with outputs; clear them"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_its_tiny_variant(notebook, tmp_path, monkeypatch):
    config = _config(notebook.stem, "tiny")
    summary = run_sweep(config, tmp_path / "runs", quiet=True)
    assert summary.ran > 0 and not summary.failed, summary.table.get("status")
    _record_a_failed_run(tmp_path / "runs")
    figure = tmp_path / f"{notebook.stem}.png"
    monkeypatch.setenv("ODEFORMER_WORKDIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ODEFORMER_FIGURE", str(figure))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the notebook wrote no PNG figure"
