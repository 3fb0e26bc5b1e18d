"""Execute the notebooks headless (nbclient) into a folder, with their outputs, for reading.

Usage: ``python scripts/run_notebooks.py [NOTEBOOK ...] [--out notebooks/executed] [--png]
[--param NAME=VALUE ...]``. Without notebooks, runs every ``notebooks/*.ipynb``. ``--param``
overrides a name of the notebooks' parameters cell (the value is a Python literal, e.g.
``--param CROPFORMER_CKPT="'logs/.../last.ckpt'"``): the assignments are added at the end of that
cell, like papermill does. ``--png`` also writes every figure as ``<out>/<stem>/figNN.png``.
Prints each notebook's wall time; exits 1 if a cell fails (its traceback is printed).
"""

from __future__ import annotations

import argparse
import ast
import base64
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
KERNEL = "python3"  # ipykernel's own kernel spec, installed with the dev extra


def inject_parameters(nb: Any, params: dict[str, Any]) -> None:
    """Append ``NAME = value`` lines to the cell tagged ``parameters`` (the first code cell
    when none is tagged)."""
    if not params:
        return
    cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    cell = (tagged or cells)[0]
    lines = [f"{name} = {value!r}" for name, value in params.items()]
    cell.source = cell.source.rstrip("\n") + "\n# injected\n" + "\n".join(lines)


def execute(
    path: str | Path,
    out_dir: str | Path | None = None,
    params: dict[str, Any] | None = None,
    *,
    timeout: int = 900,
    png: bool = False,
) -> tuple[Any, float]:
    """Run one notebook in its own folder; write it (with outputs) to ``out_dir`` if given.

    Returns (the executed notebook, wall seconds). Raises ``CellExecutionError`` on a failing cell.
    """
    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, params or {})
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - started
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / path.name)
            if png:
                write_figures(nb, out / path.stem)
    return nb, seconds


def write_figures(nb: Any, folder: Path) -> list[Path]:
    """Every ``image/png`` output of the notebook as ``folder/figNN.png`` (in cell order)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                p = folder / f"fig{len(written):02d}.png"
                p.write_bytes(base64.b64decode(data["image/png"]))
                written.append(p)
    return written


def _param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"--param {text!r}: expected NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a bare string


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "notebooks" / "executed")
    parser.add_argument("--param", type=_param, action="append", default=[])
    parser.add_argument("--png", action="store_true", help="also write every figure as PNG")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))
    if not notebooks:
        print("error: no notebooks found", file=sys.stderr)
        return 2
    failed = 0
    for nb_path in notebooks:
        try:
            _, seconds = execute(
                nb_path, args.out, dict(args.param), timeout=args.timeout, png=args.png
            )
            print(f"{nb_path.name}: ok in {seconds:.1f} s -> {args.out / nb_path.name}")
        except CellExecutionError as err:
            failed += 1
            print(f"{nb_path.name}: FAILED\n{err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
