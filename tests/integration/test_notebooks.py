"""The notebooks: committed without outputs (default selection), and each one executes headless
with its quick parameters (marker ``notebooks``: ``make test-all`` / ``pytest -m notebooks``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "01_data_and_crop_views.ipynb",
    "02_predictions_and_fusion.ipynb",
    "03_runs_and_sweeps.ipynb",
]

# figures each notebook draws at least with its quick parameters (one per data config / plot)
MIN_FIGURES = {
    "01_data_and_crop_views.ipynb": 7,
    "02_predictions_and_fusion.ipynb": 4,
    "03_runs_and_sweeps.ipynb": 2,
}


def _tracked() -> list[Path]:
    """The notebooks in git (all of notebooks/*.ipynb when this is not a git checkout)."""
    done = subprocess.run(
        ["git", "ls-files", "--", "notebooks/*.ipynb"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return NOTEBOOKS
    return [REPO / p for p in done.stdout.split()]


def test_the_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", _tracked(), ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before "
        "committing (Jupyter: Edit > Clear Outputs of All Cells; `make notebooks` writes executed "
        "copies to notebooks/executed/)"
    )
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = [
        i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert tagged == [0], f"{path.name}: the first code cell (only) must be tagged 'parameters'"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def _runner():
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", REPO / "scripts" / "run_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_notebooks"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_parameters_are_injected_into_the_parameters_cell():
    import nbformat

    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    _runner().inject_parameters(nb, {"SEED": 3, "SPLIT": "train"})
    src = [c for c in nb.cells if c.cell_type == "code"][0].source
    assert src.endswith("SEED = 3\nSPLIT = 'train'")


@pytest.mark.notebooks
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_executes_with_quick_parameters(name, tmp_path, monkeypatch):
    # data and runs of the quick defaults go to tmp_path (the kernel inherits the environment)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    params = {"WORK_DIR": str(tmp_path / "work")} if not name.startswith("01") else {}
    runner = _runner()
    nb, seconds = runner.execute(REPO / "notebooks" / name, tmp_path / "out", params, png=True)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = list((tmp_path / "out" / Path(name).stem).glob("fig*.png"))
    assert len(figures) >= MIN_FIGURES[name], f"{name}: only {len(figures)} figures"
    print(f"{name}: executed in {seconds:.1f} s, {len(figures)} figures")
