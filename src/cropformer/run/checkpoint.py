"""Find checkpoints (``ckpt=last|best``), say which one was taken, compare its run's config.

``ckpt=last`` takes the newest ``last.ckpt`` of the task's runs, whatever that run trained: the
tasks therefore name the file, its step and the run's model/data in one line
(:func:`describe_checkpoint`), and resuming checks that the run's composed ``model``/``data``
equal the command's (:func:`config_differences`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cropformer.utils.errors import UserError
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

WANDB_ID_FILE = "wandb_run_id.txt"


def find_last_checkpoint(
    log_dir: str | Path, task_name: str, exclude: str | Path | None = None
) -> Path:
    """The newest ``last.ckpt`` of any run or sweep job of ``task_name`` under ``log_dir``.

    Raises:
        UserError: there is none (names the folder searched and what to do).
    """
    root = Path(log_dir) / task_name
    found = [
        p
        for pattern in ("runs/*/checkpoints/last.ckpt", "multiruns/*/*/checkpoints/last.ckpt")
        for p in root.glob(pattern)
        if exclude is None or Path(exclude).resolve() not in p.resolve().parents
    ]
    if not found:
        raise UserError(
            f"ckpt=last: no last.ckpt found under {root}/runs/*/checkpoints/; train first "
            f"(python train.py task_name={task_name}) or pass ckpt=/path/to/file.ckpt"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def find_best_checkpoint(
    log_dir: str | Path, task_name: str, exclude: str | Path | None = None
) -> Path:
    """The best checkpoint (``best_*.ckpt``) of the newest run of ``task_name`` that has one.

    Raises:
        UserError: no run of the task saved a best checkpoint.
    """
    root = Path(log_dir) / task_name
    found = [
        p
        for pattern in ("runs/*/checkpoints/best*.ckpt", "multiruns/*/*/checkpoints/best*.ckpt")
        for p in root.glob(pattern)
        if exclude is None or Path(exclude).resolve() not in p.resolve().parents
    ]
    if not found:
        raise UserError(
            f"ckpt=best: no best*.ckpt found under {root}/runs/*/checkpoints/ (a best checkpoint "
            "is saved when validation runs during training); pass ckpt=last or ckpt=/path/to.ckpt"
        )
    return max(found, key=lambda p: p.stat().st_mtime).resolve()


def resolve_checkpoint(
    ckpt: str | None, *, log_dir: str | Path, task_name: str, exclude: str | Path | None = None
) -> Path | None:
    """``null`` -> None; ``last``/``best`` -> newest last/best ckpt of the task; a path -> it.

    The path returned is absolute.
    """
    if ckpt is None or str(ckpt) == "":
        return None
    if str(ckpt) == "last":
        return find_last_checkpoint(log_dir, task_name, exclude=exclude).resolve()
    if str(ckpt) == "best":
        return find_best_checkpoint(log_dir, task_name, exclude=exclude)
    path = Path(str(ckpt)).expanduser()
    if not path.is_file():
        raise UserError(
            f"ckpt={ckpt}: file not found; pass an existing .ckpt path, ckpt=last or ckpt=best"
        )
    return path.resolve()


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step stored in a Lightning checkpoint (None for other weight files)."""
    import torch

    try:
        stored = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return None
    step = stored.get("global_step") if isinstance(stored, dict) else None
    return int(step) if step is not None else None


def run_choices(run_dir: Path) -> dict[str, Any]:
    """The config group choices of a run (``model``, ``data``, ...), from its run records."""
    info = run_dir / "run_info.json"
    if info.is_file():
        try:
            choices = json.loads(info.read_text()).get("choices")
            if choices:
                return dict(choices)
        except (OSError, ValueError):
            pass
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        from omegaconf import OmegaConf

        try:
            node = OmegaConf.load(hydra_yaml)
            choices = OmegaConf.select(node, "hydra.runtime.choices", default=None)
            if choices is not None:
                return dict(OmegaConf.to_container(choices))  # type: ignore[arg-type]
        except Exception:
            pass
    return {}


def describe_checkpoint(path: Path, requested: str | None = None) -> str:
    """One line: which checkpoint, its step, its run and the run's model/data.

    E.g. ``ckpt=last -> /abs/logs/train/runs/<time>/checkpoints/last.ckpt (step 900; run
    <time>: model=cropformer_tiny data=synthetic)``.
    """
    path = Path(path).resolve()
    step = checkpoint_step(path)
    head = f"ckpt={requested} -> {path}" if requested else f"checkpoint {path}"
    facts = [f"step {step}" if step is not None else "step unknown"]
    if path.parent.name == "checkpoints":
        run_dir = path.parent.parent
        choices = run_choices(run_dir)
        picked = " ".join(f"{k}={choices[k]}" for k in ("model", "data") if choices.get(k))
        facts.append(f"run {run_dir.name}" + (f": {picked}" if picked else ""))
    return f"{head} ({'; '.join(facts)})"


#: data keys that change how data is loaded, not what is learnt (ignored by the resume check)
LOADER_KEYS = frozenset({"num_workers", "pin_memory", "persistent_workers", "eval_batch_size"})


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def config_differences(
    run_dir: Path, current: dict[str, Any], sections: tuple[str, ...] = ("model", "data")
) -> list[str] | None:
    """``key: stored -> current`` for each differing key of ``sections`` (None: no record).

    Both sides are the unresolved configs (``config.yaml`` of the run vs the command's), so
    interpolations compare as written.
    """
    from omegaconf import OmegaConf

    stored_path = run_dir / "config.yaml"
    if not stored_path.is_file():
        return None
    stored = OmegaConf.to_container(OmegaConf.load(stored_path), resolve=False)
    assert isinstance(stored, dict)
    diffs = []
    for section in sections:
        a = _flat(stored.get(section), section)
        b = _flat(current.get(section), section)
        for key in sorted(set(a) | set(b)):
            if key.split(".")[1:2] and section == "data" and key.split(".")[1] in LOADER_KEYS:
                continue
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory that holds ``checkpoints/<file>.ckpt``."""
    return checkpoint.resolve().parent.parent


def read_wandb_id(run_dir: Path) -> str | None:
    """The W&B run id stored in a run directory, if any."""
    path = run_dir / WANDB_ID_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def write_wandb_id(run_dir: Path, run_id: str) -> None:
    """Remember the W&B run id so ``ckpt=last`` can resume the same W&B run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / WANDB_ID_FILE).write_text(run_id + "\n")


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
