"""Find checkpoints (``ckpt=last|best``), say which one was taken, compare its run's config.

One finder (:func:`find_checkpoint`) for ``last`` and ``best``: the newest of the runs of
``train.py`` (any ``task_name``, sweeps included) and of ``make train`` (the main job, whose runs
hold a CropFormer and a Mask2Former run), narrowed by ``train_task``. When the newest run holds
several trainings' checkpoints it refuses and lists them. The tasks name the file, its step and
the run's model/data in one line (:func:`describe_checkpoint`), and resuming checks that the
run's composed ``model``/``data`` equal the command's (:func:`config_differences`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cropformer.utils.errors import UserError
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

WANDB_ID_FILE = "wandb_run_id.txt"


#: the task folder of ``make train`` (``python -m cropformer.cli.main_job``): its runs hold one
#: sub-run per compared model, ``runs/<time>/{cropformer,mask2former}/checkpoints/``
MAIN_JOB = "main_job"
#: task folders of commands that write no checkpoint
NOT_TRAINING = frozenset({"eval", "predict"})


@dataclass(frozen=True)
class Candidate:
    """A checkpoint found under the log folder: the file, the training that wrote it (its label:
    a ``task_name`` such as ``train``, or ``main_job/cropformer``) and the run it belongs to (for
    the main job, its time folder, which holds both models' runs)."""

    path: Path
    label: str
    run: Path


def checkpoint_candidates(
    log_dir: str | Path, which: str, exclude: str | Path | None = None
) -> list[Candidate]:
    """Every ``last.ckpt`` (``which="last"``) or ``best*.ckpt`` of train.py runs, sweep jobs and
    main-job runs under ``log_dir``, newest first."""
    name = "last.ckpt" if which == "last" else "best*.ckpt"
    root = Path(log_dir)
    found: list[Candidate] = []
    tasks = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for task in tasks:
        if task.name in NOT_TRAINING:
            continue
        if task.name == MAIN_JOB:
            for p in task.glob(f"runs/*/*/checkpoints/{name}"):
                found.append(Candidate(p, f"{MAIN_JOB}/{p.parents[1].name}", p.parents[2]))
            continue
        for pattern in (f"runs/*/checkpoints/{name}", f"multiruns/*/*/checkpoints/{name}"):
            found += [Candidate(p, task.name, p.parents[1]) for p in task.glob(pattern)]
    if exclude is not None:
        skip = Path(exclude).resolve()
        found = [c for c in found if skip not in c.path.resolve().parents]
    return sorted(found, key=lambda c: c.path.stat().st_mtime, reverse=True)


def find_checkpoint(
    log_dir: str | Path,
    which: str,
    train_task: str | None = None,
    exclude: str | Path | None = None,
) -> tuple[Candidate, list[Candidate]]:
    """``ckpt=last|best``: the newest checkpoint of that kind among the runs of ``train_task``
    (None: of every train.py task and of the main job). ``train_task=main_job`` takes both of its
    models, ``main_job/cropformer`` one.

    Returns:
        (the checkpoint taken, every candidate that matched, newest first).

    Raises:
        UserError: none matches (names what exists and a command that makes one), or the newest
            run holds checkpoints of several trainings (lists them and how to pick one).
    """
    all_found = checkpoint_candidates(log_dir, which, exclude)
    task = str(train_task) if train_task not in (None, "", "null", "any") else None
    found = [
        c for c in all_found if task is None or c.label == task or c.label.startswith(f"{task}/")
    ]
    what = "last.ckpt" if which == "last" else "best*.ckpt"
    selector = f" train_task={task}" if task else ""
    if not found:
        others = sorted({c.label for c in all_found})
        elsewhere = (
            f"; runs of {', '.join(others)} have one (train_task=<one of them>)" if others else ""
        )
        raise UserError(
            f"ckpt={which}{selector}: no {what} found under {Path(log_dir)} "
            f"({_layout(task)}){elsewhere}; train first ({train_command(task)}) or pass "
            "ckpt=/path/to/file.ckpt"
            + ("" if which == "last" else " (a best checkpoint is saved when validation runs)")
        )
    newest_run = found[0].run
    same_run = [c for c in found if c.run == newest_run]
    labels = sorted({c.label for c in same_run})
    if len(labels) > 1:
        listed = ", ".join(f"{c.label}: {c.path}" for c in sorted(same_run, key=lambda c: c.label))
        picks = " or ".join(f"train_task={label}" for label in labels)
        raise UserError(
            f"ckpt={which}{selector}: the newest run {newest_run} holds {len(same_run)} "
            f"checkpoints ({listed}); pick one with {picks}, or pass ckpt=<path>"
        )
    return found[0], found


def _layout(task: str | None) -> str:
    if task is None:
        return f"<task>/runs/*/checkpoints/ and {MAIN_JOB}/runs/*/<model>/checkpoints/"
    if task.split("/")[0] == MAIN_JOB:
        return f"{MAIN_JOB}/runs/*/<model>/checkpoints/"
    return f"{task}/runs/*/checkpoints/"


def train_command(task: str | None) -> str:
    """A command that exists and writes runs of ``task`` (the hint of a failed lookup)."""
    if task is None or task == "train":
        return "make train, or python train.py"
    if task.split("/")[0] == MAIN_JOB:
        return "make train"
    try:
        from cropformer.run.config import find_conf_dir

        if (find_conf_dir() / "experiment" / f"{task}.yaml").is_file():
            return f"python train.py experiment={task}"
    except UserError:
        pass
    return f"python train.py task_name={task}"


def resolve_checkpoint(
    ckpt: str | None,
    *,
    log_dir: str | Path,
    task_name: str | None,
    exclude: str | Path | None = None,
) -> Path | None:
    """``null`` -> None; ``last``/``best`` -> ``find_checkpoint``'s; a path -> it (absolute)."""
    if ckpt is None or str(ckpt) == "":
        return None
    if str(ckpt) in ("last", "best"):
        return find_checkpoint(log_dir, str(ckpt), task_name, exclude)[0].path.resolve()
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


def flat_differences(stored: Any, current: Any, prefix: str) -> list[str]:
    """``key: stored -> current`` for each leaf that differs between two nested dicts."""
    a, b = _flat(stored, prefix), _flat(current, prefix)
    return [
        f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key, "<absent>") != b.get(key, "<absent>")
    ]


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


def resolve_ckpt(
    cfg: DictConfig, train_task: str | None, *, exclude: Path | None = None
) -> Path | None:
    """``cfg.ckpt`` as an absolute path (``last``/``best``: ``find_checkpoint`` over the runs of
    ``train_task``, None = every training task and the main job), logged in one line.

    The line names the file, its step, the run's model/data, which training wrote it and how many
    other runs had one (``train_task=`` picks another). Helper for train, eval and predict.
    """
    requested = cfg.get("ckpt")
    if requested is None or str(requested) not in ("last", "best"):
        path = resolve_checkpoint(
            requested, log_dir=cfg.paths.log_dir, task_name=train_task, exclude=exclude
        )
        if path is not None:
            log.info(describe_checkpoint(path, None if requested is None else str(requested)))
        return path
    taken, matched = find_checkpoint(cfg.paths.log_dir, str(requested), train_task, exclude)
    others = len({c.run for c in matched}) - 1
    tail = f"; newest of {others + 1} runs, train_task=... picks another" if others else ""
    log.info(f"{describe_checkpoint(taken.path, str(requested))} [{taken.label}{tail}]")
    return taken.path.resolve()


def check_resume_matches(cfg: DictConfig, checkpoint: Path) -> None:
    """Resuming: the checkpoint's run must have the command's ``model`` and ``data``.

    The run folder's ``config.yaml`` is compared when the checkpoint still sits in its run; a
    checkpoint moved elsewhere is compared by what it stores itself (its network config).

    Raises:
        UserError: names what differs and how to proceed (``ckpt_mismatch=allow``).
    """
    if str(cfg.get("ckpt_mismatch", "error")) == "allow":
        return
    current = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(current, dict)
    diffs = config_differences(run_dir_of(checkpoint), {str(k): v for k, v in current.items()})
    if diffs is None:  # no run folder beside the checkpoint: what the checkpoint stores
        diffs = stored_network_differences(checkpoint, cfg)
    if not diffs:
        return
    shown = "; ".join(diffs[:4]) + (f"; ... ({len(diffs) - 4} more)" if len(diffs) > 4 else "")
    raise UserError(
        f"ckpt={cfg.get('ckpt')} resolved to {checkpoint}, whose run trained a different "
        f"model/data than this command ({shown}): pass the same settings, another "
        "ckpt=/path/to.ckpt, or ckpt_mismatch=allow to resume anyway"
    )


def stored_network_differences(checkpoint: Path, cfg: DictConfig) -> list[str]:
    """``model.net.<key>: stored -> current`` between a checkpoint's network and the command's."""
    from cropformer.model.checkpoint_io import read_checkpoint_header

    stored = read_checkpoint_header(checkpoint)
    net = (stored.get("hyper_parameters") or {}).get("net") if isinstance(stored, dict) else None
    if net is None:
        return []
    current = OmegaConf.to_container(cfg.model.net, resolve=True)
    return flat_differences(net, current, "model.net")
