"""Console entry points: ``cropformer-train``, ``cropformer-eval``, ``cropformer-predict`` and
``cropformer <train|eval|predict>``, installed with the package.

The repository's ``train.py``, ``eval.py`` and ``predict.py`` call ``run_command`` as well, so a
pip user's command and the root scripts run the same code on the same config tree (shipped inside
the package as ``cropformer/conf``). The one difference is where runs are written by default:
the root scripts use the repository (``logs/``), the installed commands the current directory.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

#: command -> (config name, module whose ``main(cfg)`` runs the task)
TASKS: dict[str, tuple[str, str]] = {
    "train": ("train", "cropformer.cli.train"),
    "eval": ("eval", "cropformer.cli.eval"),
    "predict": ("predict", "cropformer.cli.predict"),
}
USAGE = (
    "usage: cropformer {train,eval,predict} [key=value ...] [hydra options]\n"
    "  cropformer predict ckpt=model.pth input=scans/ output=masks/   (see `cropformer predict "
    "--help`)\n  the same as cropformer-train, cropformer-eval, cropformer-predict"
)


def run_command(
    name: str,
    argv: list[str] | None = None,
    *,
    project_root: str | Path | None = None,
    conf_dir: str | Path | None = None,
) -> Any:
    """Check the command line, then run task ``name`` under ``@hydra.main``.

    Args:
        name: ``train``, ``eval`` or ``predict``.
        argv: the overrides and Hydra options (default ``sys.argv[1:]``).
        project_root: ``PROJECT_ROOT`` unless already set: where ``logs/`` and ``data/`` go
            (default: the current directory).
        conf_dir: the config tree (default ``find_conf_dir()``: the packaged one).
    """
    import hydra

    from cropformer.cli.validate import check_command_line
    from cropformer.run.config import find_conf_dir

    config_name, module = TASKS[name]
    os.environ.setdefault("PROJECT_ROOT", str(Path(project_root or Path.cwd()).resolve()))
    conf = Path(conf_dir).resolve() if conf_dir is not None else find_conf_dir()
    args = list(sys.argv[1:] if argv is None else argv)
    # unknown keys and bad values: one line, before Hydra creates a run folder
    check_command_line(config_name, conf, args)
    task = importlib.import_module(module).main
    sys.argv = [sys.argv[0], *args]  # @hydra.main reads the command line from sys.argv
    return hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)(task)()


def train() -> None:
    """``cropformer-train``: ``python train.py`` for installed packages."""
    run_command("train")


def evaluate() -> None:
    """``cropformer-eval``: ``python eval.py`` for installed packages."""
    run_command("eval")


def predict() -> None:
    """``cropformer-predict``: ``python predict.py`` for installed packages."""
    run_command("predict")


def main() -> None:
    """``cropformer <verb> ...``: one command with the three tasks as verbs."""
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    verb = sys.argv[1]
    if verb not in TASKS:
        print(f"error: unknown command {verb!r}; use one of {', '.join(TASKS)}", file=sys.stderr)
        sys.exit(2)
    run_command(verb, sys.argv[2:])
