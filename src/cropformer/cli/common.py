"""Shared steps of the train/eval/predict tasks: run setup, error reporting, run records.

A failed run: problems of the command line (unknown keys, bad values) stop the command before
Hydra creates a run folder (``cli/validate.py``); a problem found later (a missing data file, a
checkpoint of another model) is printed as one ``error:`` line and recorded in the run folder,
in ``error.txt`` and in the run's log file (``<task>.log``). Sweep jobs write ``FAILED.txt``.
"""

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

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from cropformer.utils.checkpoint import (
    config_differences,
    describe_checkpoint,
    resolve_checkpoint,
    run_dir_of,
)
from cropformer.utils.errors import UserError
from cropformer.utils.hardware import auto_num_workers, auto_pin_memory
from cropformer.utils.pylogger import RankedLogger, file_logger, setup_console_logging
from cropformer.utils.rich_utils import print_config_tree

log = RankedLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _is_rank_zero() -> bool:
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


def require(cfg: DictConfig, key: str, hint: str) -> Any:
    """``cfg[key]`` or a UserError naming the key and what to pass."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        value = None
    if value is None:
        raise UserError(f"missing required value `{key}`: {hint}")
    return value


#: warnings of third-party code that say nothing about the run
QUIET_WARNINGS: tuple[str, ...] = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",)


def start_run(cfg: DictConfig, show_config: bool = False) -> Path:
    """Set up the console, record the run (config, environment); return the run dir.

    The config tree always goes to ``config_tree.log``; it is printed when ``extras.print_config``
    is true, or when it is null and ``show_config`` (the task's default: train prints it, eval and
    predict do not).
    """
    setup_console_logging()
    out = output_dir(cfg)
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    show = extras.get("print_config")
    if _is_rank_zero():
        print_config_tree(
            cfg,
            save_to=out / "config_tree.log",
            show=bool(show_config if show is None else show),
        )
        OmegaConf.save(cfg, out / "config.yaml")
        (out / "run_info.json").write_text(json.dumps(run_info(), indent=2) + "\n")
    return out


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


def resolve_ckpt(cfg: DictConfig, task_name: str, *, exclude: Path | None = None) -> Path | None:
    """``cfg.ckpt`` as an absolute path (``last``/``best``: newest of ``task_name``), logged.

    Logs one line naming the file, its step and its run's model/data (``ckpt=last`` takes the
    newest run of the task, whatever it trained). Helper for train, eval and predict.
    """
    requested = cfg.get("ckpt")
    path = resolve_checkpoint(
        requested, log_dir=cfg.paths.log_dir, task_name=task_name, exclude=exclude
    )
    if path is not None:
        log.info(describe_checkpoint(path, str(requested)))
    return path


def check_resume_matches(cfg: DictConfig, checkpoint: Path) -> None:
    """Resuming: the checkpoint's run must have the command's ``model`` and ``data``.

    Raises:
        UserError: names what differs and how to proceed (``ckpt_mismatch=allow``).
    """
    if str(cfg.get("ckpt_mismatch", "error")) == "allow":
        return
    current = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(current, dict)
    diffs = config_differences(run_dir_of(checkpoint), {str(k): v for k, v in current.items()})
    if not diffs:
        return
    shown = "; ".join(diffs[:4]) + (f"; ... ({len(diffs) - 4} more)" if len(diffs) > 4 else "")
    raise UserError(
        f"ckpt={cfg.get('ckpt')} resolved to {checkpoint}, whose run trained a different "
        f"model/data than this command ({shown}): pass the same settings, another "
        "ckpt=/path/to.ckpt, or ckpt_mismatch=allow to resume anyway"
    )


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


def check_data_paths(datamodule: Any, stages: tuple[str, ...]) -> None:
    """Every annotation file and image root the run needs exists (after data preparation)."""
    keys = ["image_root"] + [f"{s}_annotations" for s in stages]
    for key in keys:
        value = getattr(datamodule, key, None)
        if value is None:
            if key == "image_root":
                continue
            raise UserError(f"data.{key} is not set; pass data.{key}=/path/to/{key}.json")
        if not Path(str(value)).exists():
            raise UserError(
                f"data.{key}={value} does not exist; pass the right path (data.{key}=...) or set "
                "DATA_ROOT to the folder holding the datasets"
            )


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
            _record_error(cfg, err)
            sys.exit(2)
        except Exception as err:
            if in_multirun():
                _record_failure(cfg, err)
                return math.nan
            raise

    return wrapper  # type: ignore[return-value]


def _record_error(cfg: DictConfig, err: BaseException) -> None:
    """A single run's error line in its folder (``error.txt``) and its log file, if it has them."""
    try:
        path = Path(str(cfg.paths.output_dir)).expanduser().resolve()
        if path.is_dir():
            (path / "error.txt").write_text(f"error: {err}\n")
            file_logger().error(f"error: {err}")
    except Exception:  # no run folder to record in (e.g. outside Hydra): the console has it
        pass


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    try:
        out = output_dir(cfg)
        (out / "FAILED.txt").write_text("".join(traceback.format_exception(err)))
        log.error(f"sweep job failed ({type(err).__name__}: {err}); see {out / 'FAILED.txt'}")
    except Exception:  # the failure report must never hide the original error
        print(f"sweep job failed: {err}", file=sys.stderr)


def pixel_decoder_setting(value: Any) -> str | None:
    """``pixel_decoder=auto|fp32|encoder|all|null`` of predict.py / eval.py, checked."""
    from cropformer.inference.predictor import PIXEL_DECODER

    if value is None or str(value) in PIXEL_DECODER:
        return None if value is None else str(value)
    raise UserError(
        f"pixel_decoder={value!r}: use auto (= encoder under bf16/fp16), fp32 (all of the pixel "
        "decoder in fp32, official), encoder (its deformable encoder in bf16, FPN and mask "
        "features fp32) or all"
    )
