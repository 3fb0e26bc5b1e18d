"""Provenance of a run: what produced a record, written into every run's ``metrics.json``.

The commit and dirty flag are read when the run starts (a record must not name a commit made
while it ran), the resolved config is stored next to the record with its hash, and no absolute
path is kept: paths under the repository or the log root are written relative to them, so a
record can be committed and compared across machines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[3]
RESOLVED_CONFIG = "config_resolved.yaml"


#: what a run's outcome cannot depend on: the results it and its siblings write (records,
#: tables, plots) and prose. ``make paper`` rewrites the README's generated block and the tables
#: after every job, which must not mark the next job's checkout as modified.
NOT_CODE = (":(exclude)results", ":(exclude,glob)**/*.md", ":(exclude,glob)*.md")


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding the code; dirty
    means a tracked file other than ``NOT_CODE`` differs from the commit."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                *NOT_CODE,
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(status) if sha else None}


def hardware() -> dict[str, Any]:
    """CPU model, core count, torch's CPU capability and bf16 units, and the GPU model (None
    without CUDA). The kernels torch picks follow the capability, so float results of two
    machines with one CPU model name can differ in the last bits."""
    import torch

    from cropformer.utils.hardware import cpu_capability, cpu_reduced_precision_units

    cpu = platform.processor() or None
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "stepping") and key not in fields:
                fields[key] = value.strip()
            if not line.strip():  # the first processor's block is enough
                break
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    # virtual machines often mask the model name ("AMD EPYC"): family/model/stepping tell two CPU
    # generations apart, and with them the kernels a library picks
    cpu_id = (
        "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
        if "cpu family" in fields
        else None
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_id": cpu_id,
        "cpu_count": os.cpu_count(),
        "cpu_capability": cpu_capability(),
        "cpu_bf16_units": list(cpu_reduced_precision_units("bf16") or ()),
        "gpu": gpu,
    }


def versions() -> dict[str, str]:
    """Python, torch, lightning, timm and the package's own version."""
    import lightning
    import timm
    import torch

    from cropformer import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "cropformer": __version__,
    }


def relative_path(path: str | os.PathLike[str], roots: dict[str, Path]) -> str:
    """``path`` as ``<name>/rel`` under the first root holding it; else the path unchanged."""
    p = Path(path).expanduser()
    for name, root in roots.items():
        try:
            rel = p.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        return f"<{name}>/{rel.as_posix()}" if rel.parts else f"<{name}>"
    return str(path)


def relativize(node: Any, roots: dict[str, Path]) -> Any:
    """Every absolute path string in a JSON-like tree rewritten by :func:`relative_path`."""
    if isinstance(node, dict):
        return {k: relativize(v, roots) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [relativize(v, roots) for v in node]
    if isinstance(node, str) and os.path.isabs(node):
        return relative_path(node, roots)
    return node


def relativize_overrides(overrides: list[str], roots: dict[str, Path]) -> list[str]:
    """Command-line overrides with absolute path values written relative to the roots."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        out.append(f"{key}={relative_path(value, roots)}" if sep and os.path.isabs(value) else o)
    return out


def path_roots(cfg: DictConfig | None = None) -> dict[str, Path]:
    """The roots records are relative to: the log root, the data root and the repository."""
    roots: dict[str, Path] = {}
    for name, key in (("log_dir", "paths.log_dir"), ("data_dir", "paths.data_dir")):
        value = OmegaConf.select(cfg, key, default=None) if cfg is not None else None
        if value:
            roots[name] = Path(str(value))
    root = OmegaConf.select(cfg, "paths.root_dir", default=None) if cfg is not None else None
    roots["repo"] = Path(str(root)) if root else REPO
    return roots


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config with interpolations resolved where they can be (Hydra's outside a job stay)."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:...} outside a Hydra job
        data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def start(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Provenance known when a run starts; stores the resolved config as ``config_resolved.yaml``.

    Returns the record to finish with :func:`finish` (the commit is read now, not at the end).
    """
    roots = path_roots(cfg)
    config = relativize(resolved_config(cfg), roots)
    text = OmegaConf.to_yaml(OmegaConf.create(config), sort_keys=True)
    (run_dir / RESOLVED_CONFIG).write_text(text)
    record: dict[str, Any] = {
        **git_state(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {
            "file": RESOLVED_CONFIG,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
        "data": data_identity(cfg),
        "versions": versions(),
        "hardware": hardware(),
        "_t0": time.time(),
    }
    return record


def finish(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the wall time filled in."""
    out = {k: v for k, v in record.items() if k != "_t0"}
    out["wall_minutes"] = round((time.time() - float(record["_t0"])) / 60.0, 3)
    return out


def data_identity(cfg: DictConfig) -> dict[str, Any]:
    """The synthetic data's cache key and generator version, or the annotation files' names."""
    data = cfg.get("data")
    if data is None:
        return {}
    syn = OmegaConf.select(cfg, "data.synthetic", default=None)
    if syn:
        from cropformer.data.synthetic import GENERATOR_VERSION, SyntheticSpec

        plain = OmegaConf.to_container(syn, resolve=True)
        assert isinstance(plain, dict)
        spec = {str(k): v for k, v in plain.items() if k != "root"}
        for key, value in spec.items():
            if isinstance(value, list):
                spec[key] = tuple(value)
        return {
            "synthetic_key": SyntheticSpec(**spec).key(),
            "generator_version": GENERATOR_VERSION,
        }
    roots = path_roots(cfg)
    out: dict[str, Any] = {}
    for key in ("train_annotations", "val_annotations", "test_annotations"):
        value = OmegaConf.select(cfg, f"data.{key}", default=None)
        if value:
            out[key] = relative_path(str(value), roots)
    return out
