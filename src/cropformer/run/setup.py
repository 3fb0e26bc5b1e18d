"""What every task does around its work: the run folder, console and config record, run info,
``auto`` loader settings, and the console form of a summary.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cropformer.run.config_tree import print_config_tree
from cropformer.utils.hardware import auto_num_workers, auto_pin_memory
from cropformer.utils.pylogger import RankedLogger, setup_console_logging

log = RankedLogger(__name__)


def is_rank_zero() -> bool:
    """True on the first process of a (possibly distributed) run."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def output_dir(cfg: DictConfig) -> Path:
    """The run directory (``paths.output_dir``, absolute), created if needed."""
    path = Path(str(cfg.paths.output_dir)).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def in_multirun() -> bool:
    """True inside a Hydra multirun job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return bool(HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    except Exception:
        return False


#: warnings of third-party code that say nothing about the run
QUIET_WARNINGS: tuple[str, ...] = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",)


def start_run(cfg: DictConfig, show_config: bool | None = False) -> Path:
    """Set up the console, record the run (config, environment); return the run dir.

    The config tree always goes to ``config_tree.log``; it is printed when ``extras.print_config``
    is true, or when it is null and ``show_config`` (the task's default: train prints it, eval and
    predict do not); ``show_config=None`` never prints it here (train prints it once its objects
    are built, ``show_config_tree``, so a failure to build them stays one line).
    """
    setup_console_logging()
    # Ctrl-C: the boundary's one ``interrupted:`` line replaces Lightning's own
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QuietInterrupt())
    out = output_dir(cfg)
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    show = extras.get("print_config")
    if is_rank_zero():
        print_config_tree(
            cfg,
            save_to=out / "config_tree.log",
            show=show_config is not None and bool(show_config if show is None else show),
        )
        OmegaConf.save(cfg, out / "config.yaml")
        (out / "run_info.json").write_text(json.dumps(run_info(), indent=2) + "\n")
    return out


class _QuietInterrupt(logging.Filter):
    """Drops Lightning's 'Detected KeyboardInterrupt' line (the boundary reports Ctrl-C)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


def show_config_tree(cfg: DictConfig, default: bool) -> None:
    """Print the config tree when ``extras.print_config`` says so (null: the task's default)."""
    extras = cfg.get("extras") or {}
    show = extras.get("print_config")
    if is_rank_zero() and bool(default if show is None else show):
        print_config_tree(cfg, show=True)


def hydra_choices() -> dict[str, Any]:
    """The config group choices of the running Hydra job (``{}`` outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            choices = HydraConfig.get().runtime.choices
            return {str(k): v for k, v in OmegaConf.to_container(choices).items()}  # type: ignore[union-attr]
    except Exception:
        pass
    return {}


def resolve_loader_settings(cfg: DictConfig) -> None:
    """``data.num_workers: auto`` and ``data.pin_memory: auto`` follow the machine (in place).

    ``auto`` workers = min(8, usable CPUs - 1); pinned memory only when a CUDA device is visible
    and the trainer may use it. Logs the values chosen.
    """
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return
    changed: dict[str, Any] = {}
    if str(data.get("num_workers")) == "auto":
        changed["num_workers"] = auto_num_workers("auto")
    if str(data.get("pin_memory")) == "auto":
        accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
        changed["pin_memory"] = auto_pin_memory("auto") and accelerator != "cpu"
    if changed:
        with open_dict(data):
            for key, value in changed.items():
                data[key] = value
        log.info("data loader: " + ", ".join(f"{k}={v}" for k, v in changed.items()) + " (auto)")


def readable(summary: dict[str, Any], digits: int = 2) -> dict[str, Any]:
    """Floats rounded for the console (files keep full precision)."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in summary.items()}


def run_info() -> dict[str, Any]:
    """Versions, git state and host: what a reader needs to reproduce a run."""
    import lightning
    import timm
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "host": platform.node(),
        "argv": sys.argv,
        "choices": hydra_choices(),
    }
    repo = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        info["git_sha"] = sha or None
        info["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        info["git_sha"] = None
    return info
