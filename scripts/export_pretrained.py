"""Export the network weights of a training run as an ``init_checkpoint`` file + provenance.

    python scripts/export_pretrained.py logs/embedded_pretrain/runs/<run> \\
        --out benchmarks/embedded/mask2former_tiny_pretrain.pt

Writes ``{"state_dict": <network weights>}`` (float32, no optimizer state) and, beside it,
``PROVENANCE.json``: the command, the composed data config (synthetic generator parameters),
seed, steps, the commit of the run (run_info.json) and its validation metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import torch
import yaml


def _synthetic_spec(node: dict | None) -> dict | None:
    """The generator parameters as the data module resolves them, with the cache key."""
    if not node:
        return None
    from dataclasses import asdict

    from cropformer.data.synthetic import GENERATOR_VERSION, SyntheticSpec

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in node.items() if k != "root"}
    spec = SyntheticSpec(**fields)
    return {"key": spec.key(), "generator_version": GENERATOR_VERSION, **asdict(spec)}


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, shapes, dtypes and bytes (not the pickle container)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def export(run_dir: Path, out: Path) -> dict:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"error: {ckpt} not found: pass the run folder of a finished training run")
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)
    state = {k[4:]: v.float() for k, v in stored["state_dict"].items() if k.startswith("net.")}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, out)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    info_path = run_dir / "run_info.json"
    run_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    overrides_path = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
    run_prov = metrics.get("provenance") or {}
    provenance = {
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "tensor_sha256": tensor_digest(state),
        # the clean commit the run started from (``make pretrain-check`` retrains from it)
        "commit": run_prov.get("commit", run_info.get("git_sha")),
        "git_dirty": run_prov.get("dirty", run_info.get("git_dirty")),
        "command": "python train.py " + " ".join(overrides or []),
        "export": f"python scripts/export_pretrained.py <run> --out <dir>/{out.name}",
        "model": cfg.get("model", {}).get("net", {}).get("backbone", {}).get("model_name"),
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "steps": int(stored.get("global_step", 0)),
        "data": {k: cfg["data"].get(k) for k in ("train_short_sides", "crop")},
        "synthetic_spec": _synthetic_spec(cfg["data"].get("synthetic")),
        "run_info": {k: v for k, v in run_info.items() if k not in ("host", "argv")},
        "run_provenance": run_prov,
        "val_metrics": {
            k: v
            for k, v in metrics.items()
            # a class-aware run has no entity AP (NaN): strict JSON readers refuse NaN
            if (k.startswith("val_") or k == "entity_ap")
            and not (isinstance(v, float) and math.isnan(v))
        },
        "num_tensors": len(state),
        "num_parameters": int(sum(v.numel() for v in state.values())),
    }
    (out.parent / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1, default=str))
    return provenance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument(
        "--out", type=Path, default=Path("benchmarks/embedded/mask2former_tiny_pretrain.pt")
    )
    args = ap.parse_args(argv)
    info = export(args.run_dir, args.out)
    print(json.dumps({k: info[k] for k in ("file", "steps", "num_parameters", "val_metrics")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
