"""Composed configs for quick CPU runs of the real tasks (tiny model, tiny synthetic data)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from cropformer.run.config import compose_config

REPO = Path(__file__).resolve().parents[2]

# tiny synthetic scenes (cached per data dir), tiny views, few points: seconds per run on 2 cores
TINY_DATA = [
    "data.synthetic.num_train=6",
    "data.synthetic.num_val=2",
    "data.synthetic.num_test=2",
    "data.synthetic.image_size=[320,240]",
    "data.train_short_sides=[128]",
    "data.train_max_size=192",
    "data.test_short_side=128",
    "data.test_max_size=192",
]
TINY_RUN = [
    *TINY_DATA,
    "model.criterion.num_points=256",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "callbacks.periodic_checkpoint.every_n_train_steps=2",
    "callbacks.overlays.num_images=2",
    "extras.print_config=false",
]


def tiny_cfg(
    tmp: Path,
    *extra: str,
    name: str = "train",
    run: str | None = None,
    data_dir: Path | None = None,
) -> DictConfig:
    """A composed config whose run directory follows the Hydra layout under ``tmp/logs``."""
    run = run or time.strftime("%H-%M-%S") + f"_{time.time_ns() % 10**9}"
    task = "train" if name == "train" else name
    overrides = [
        *(TINY_RUN if name == "train" else ["extras.print_config=false"]),
        *(TINY_DATA if name == "eval" else []),
        f"paths.log_dir={tmp}/logs",
        *([f"paths.data_dir={data_dir or tmp / 'data'}"] if name != "predict" else []),
        f"paths.output_dir={tmp}/logs/{task}/runs/{run}",
        *extra,
    ]
    return compose_config(overrides, config_name=name)


def run_script(script: str, *args: str, timeout: int = 300, cwd: Path = REPO):
    """Run ``python <script> args`` from the repository root; returns CompletedProcess."""
    return subprocess.run(
        [sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def gt_json_of(cfg: DictConfig, split: str = "val") -> Path:
    """The ground-truth json a composed config evaluates ``split`` against."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _recursive_=False)
    dm.prepare_data()
    return Path(dm.val_annotation_file if split == "val" else dm.test_annotation_file)


def reference_entity_ap(results_json: Path, gt_json: Path) -> float:
    """AP^e of a results file recomputed with stock pycocotools, outside the platform's code.

    Categories collapsed to one, standard COCOeval parameters: the number a run's metric must
    match (a check that can fail, unlike a range check).
    """
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = json.loads(Path(gt_json).read_text())
    gt["categories"] = [{"id": 1, "name": "entity"}]
    for a in gt["annotations"]:
        a["category_id"] = 1
    dts = [dict(r, category_id=1) for r in json.loads(Path(results_json).read_text())]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if not dts:
            return 0.0
        ev = COCOeval(coco, coco.loadRes(dts), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(float(ev.stats[0]), 0.0) * 100.0
