"""Find checkpoints (``ckpt=last``) and remember the W&B run id next to them."""

from __future__ import annotations

from pathlib import Path

from cropformer.utils.errors import UserError

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


def resolve_checkpoint(
    ckpt: str | None, *, log_dir: str | Path, task_name: str, exclude: str | Path | None = None
) -> Path | None:
    """``null`` -> None; ``last`` -> newest last.ckpt of the task; a path -> that file."""
    if ckpt is None or str(ckpt) == "":
        return None
    if str(ckpt) == "last":
        return find_last_checkpoint(log_dir, task_name, exclude=exclude)
    path = Path(str(ckpt)).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt={ckpt}: file not found; pass an existing .ckpt path or ckpt=last")
    return path


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
