"""Shared steps of the train/eval/predict tasks: run setup, error reporting, run records."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from cropformer.utils.errors import UserError
from cropformer.utils.pylogger import RankedLogger
from cropformer.utils.rich_utils import print_config_tree

log = RankedLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _is_rank_zero() -> bool:
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def output_dir(cfg: DictConfig) -> Path:
    """The run directory (``paths.output_dir``), created if needed."""
    path = Path(str(cfg.paths.output_dir))
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


def require(cfg: DictConfig, key: str, hint: str) -> Any:
    """``cfg[key]`` or a UserError naming the key and what to pass."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        value = None
    if value is None:
        raise UserError(f"missing required value `{key}`: {hint}")
    return value


def start_run(cfg: DictConfig) -> Path:
    """Apply extras (warnings, config tree), record the run's environment; return the run dir."""
    out = output_dir(cfg)
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if _is_rank_zero():
        print_config_tree(
            cfg,
            save_to=out / "config_tree.log",
            show=bool(extras.get("print_config", True)),
        )
        OmegaConf.save(cfg, out / "config.yaml")
        (out / "run_info.json").write_text(json.dumps(run_info(), indent=2) + "\n")
    return out


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


def write_json(path: Path, data: Any) -> None:
    """Write json atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def user_errors_exit(func: F) -> F:
    """Turn the errors a user can fix into one ``error: ...`` line and exit code 2.

    Inside a multirun, any failure is recorded in the job's directory (``FAILED.txt``) and the job
    returns NaN so the rest of the sweep goes on.
    """

    @functools.wraps(func)
    def wrapper(cfg: DictConfig) -> Any:
        from cropformer.training.module import NonFiniteLossError

        try:
            return func(cfg)
        except (UserError, FileNotFoundError, NonFiniteLossError, MissingMandatoryValue) as err:
            if in_multirun():
                _record_failure(cfg, err)
                return math.nan
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Exception as err:
            if in_multirun():
                _record_failure(cfg, err)
                return math.nan
            raise

    return wrapper  # type: ignore[return-value]


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    try:
        out = output_dir(cfg)
        (out / "FAILED.txt").write_text("".join(traceback.format_exception(err)))
        log.error(f"sweep job failed ({type(err).__name__}: {err}); see {out / 'FAILED.txt'}")
    except Exception:  # the failure report must never hide the original error
        print(f"sweep job failed: {err}", file=sys.stderr)
