"""``make pretrain-check``: retrain the shipped stage-1 weights from the commit PROVENANCE.json
names and compare them with the shipped file.

    python scripts/check_pretrain.py [--workdir DIR] [--keep]

A clean checkout of that commit is made in ``DIR`` (a temporary folder by default), its
``python train.py experiment=embedded_pretrain`` runs with this interpreter (its own ``src`` on
the path), the weights are exported as ``make pretrain`` does, and the tensors are compared:
bit-identical (the training is deterministic on CPU with the same thread count and CPU model,
not with only the same instruction set: an AVX2 host and an AVX-512 host train differently, as
do two AVX-512 hosts of other CPU models (docs/results.md), e.g. `make train` seed 1 gives AP^e
10.16 / 8.58 on the one and 9.74 / 8.42 on the other), or else the
largest difference and the validation AP^e of both are printed. Exit 0 when bit-identical or when
the AP^e agree within ``--ap-tolerance`` (0.3 points by default), 1 otherwise. About 20-30 min on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "benchmarks" / "embedded" / "mask2former_tiny_pretrain.pt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the checkout and the run")
    ap.add_argument("--ap-tolerance", type=float, default=0.3)
    args = ap.parse_args(argv)
    prov = json.loads((SHIPPED.parent / "PROVENANCE.json").read_text())
    commit = prov.get("commit")
    if not commit or prov.get("git_dirty"):
        print(
            f"error: PROVENANCE.json names no clean commit ({commit}, "
            f"dirty={prov.get('git_dirty')})"
        )
        return 1
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pretrain-check-"))
    checkout = work / "checkout"
    if checkout.exists():
        shutil.rmtree(checkout)
    subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", commit], check=True)
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), PROJECT_ROOT=str(checkout))
    run = work / "run"
    print(f"[pretrain-check] retraining at {commit[:10]} in {work} (20-30 min on 2 cores)")
    subprocess.run(
        [sys.executable, "train.py", *prov["command"].split()[2:], f"hydra.run.dir={run}"],
        cwd=checkout,
        env=env,
        check=True,
    )
    out = work / "retrained.pt"
    subprocess.run(
        [sys.executable, "scripts/export_pretrained.py", str(run), "--out", str(out)],
        cwd=checkout,
        env=env,
        check=True,
    )
    a = torch.load(SHIPPED, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    same_keys = sorted(a) == sorted(b)
    diff = max((float((a[k] - b[k]).abs().max()) for k in a if k in b), default=float("nan"))
    identical = same_keys and all(torch.equal(a[k], b[k]) for k in a)
    new = json.loads((work / "PROVENANCE.json").read_text())
    ap_a = prov["val_metrics"].get("val_entity_ap")
    ap_b = new["val_metrics"].get("val_entity_ap")
    print(
        json.dumps(
            {
                "commit": commit,
                "bit_identical": identical,
                "max_abs_diff": diff,
                "val_entity_ap_shipped": ap_a,
                "val_entity_ap_retrained": ap_b,
            }
        )
    )
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    if identical:
        return 0
    ok = ap_a is not None and ap_b is not None and abs(ap_a - ap_b) <= args.ap_tolerance
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
