"""``python predict.py ckpt=... input=... output=...``: entity masks for any images, any size."""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cropformer.cli.common import require, start_run, user_errors_exit, write_json
from cropformer.cli.eval import load_module
from cropformer.utils.checkpoint import resolve_checkpoint
from cropformer.utils.errors import UserError
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm"}


def list_inputs(spec: str) -> list[Path]:
    """A directory (its image files, recursively), a single file, or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(
            f"input={spec}: no image files found (pass a directory, a file or a quoted glob "
            "such as input='photos/*.jpg')"
        )
    return files


def _output_stems(files: list[Path]) -> list[str]:
    """File stems, made unique when two inputs share a name (e.g. a/1.jpg and b/1.jpg)."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    common = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    return [str(f.resolve().with_suffix("").relative_to(common)).replace("/", "__") for f in files]


def _test_settings(cfg: DictConfig, data_cfg: dict[str, Any]) -> dict[str, Any]:
    """Test-time view settings: command line > values stored with the checkpoint > official."""
    crop = dict(data_cfg.get("crop") or {})
    test = cfg.get("test") or {}

    def pick(key: str, stored: Any, default: Any) -> Any:
        value = test.get(key)
        if value is not None:
            return value
        return stored if stored is not None else default

    num_crops = int(pick("num_crops", crop.get("num_test"), 4))
    mode = str(crop.get("mode", "fixed"))
    return {
        "short_side": int(pick("short_side", data_cfg.get("test_short_side"), 800)),
        "max_size": int(pick("max_size", data_cfg.get("test_max_size"), 1333)),
        "num_crops": num_crops,
        "crop_ratio": float(pick("crop_ratio", crop.get("ratio"), 0.7)),
        "stride_ratio": float(crop.get("stride_ratio", 0.6)),
        "crop_mode": "none" if num_crops == 0 or mode == "none" else mode,
    }


def _view_chunk(value: Any) -> int | str | None:
    """The ``view_chunk`` setting, checked before any work starts."""
    if value is None or value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise UserError(
        f"view_chunk={value!r}: use auto (1 view at a time on CPU, all on GPU), null (all views "
        "at once) or a positive number of views"
    )


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Segment every input image; write overlay PNG, 16-bit id-map PNG and RLE json per image."""
    from rich.progress import track

    from cropformer.data.decode import load_image
    from cropformer.evaluation.writers import write_id_map_png, write_overlay, write_rle_json
    from cropformer.inference.predictor import EntityPredictor

    started = time.time()
    require(cfg, "ckpt", "pass ckpt=/path/to/file.ckpt or ckpt=last")
    require(cfg, "input", "pass input=DIR, input=FILE or input='photos/*.jpg'")
    view_chunk = _view_chunk(cfg.get("view_chunk", "auto"))
    files = list_inputs(str(cfg.input))
    checkpoint = resolve_checkpoint(
        str(cfg.ckpt), log_dir=cfg.paths.log_dir, task_name=str(cfg.get("train_task", "train"))
    )
    assert checkpoint is not None
    run_dir = start_run(cfg)
    out_dir = Path(str(cfg.output)) if cfg.get("output") else run_dir / "predictions"
    out_dir.mkdir(parents=True, exist_ok=True)

    node = cfg.get("fusion")
    fusion = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    module = load_module(checkpoint, fusion)  # type: ignore[arg-type]
    settings = _test_settings(cfg, dict(getattr(module, "_data_config", None) or {}))
    device = str(cfg.get("device", "auto"))
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
    predictor = EntityPredictor(
        module.net,
        module.fusion,
        device=device,
        precision=str(cfg.get("precision", "32")),
        view_chunk=view_chunk,
        **settings,
    )
    write = cfg.get("write") or {}
    log.info(f"{len(files)} images -> {out_dir} (views: {settings})")
    done, skipped = 0, []
    stems = _output_stems(files)
    for path, stem in track(
        list(zip(files, stems)), description="predict", disable=not sys.stdout.isatty()
    ):
        try:
            image = load_image(path)
        except (OSError, ValueError) as err:
            log.warning(f"skipping {path}: {err}")
            skipped.append(str(path))
            continue
        pred = predictor.predict(image)
        if write.get("overlay", True):
            write_overlay(out_dir / f"{stem}_overlay.png", image, pred)
        if write.get("id_map", True):
            write_id_map_png(out_dir / f"{stem}_ids.png", pred)
        if write.get("rle_json", True):
            write_rle_json(out_dir / f"{stem}.json", pred, file_name=str(path))
        done += 1
        if not sys.stdout.isatty():
            print(f"[{done + len(skipped)}/{len(files)}] {path}", flush=True)
    summary = {
        "processed": done,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "output": str(out_dir),
        "checkpoint": str(checkpoint),
        "minutes": round((time.time() - started) / 60.0, 2),
    }
    write_json(run_dir / "predict_summary.json", summary)
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s): {', '.join(skipped)}", file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped_files"}), flush=True)
    return summary


@user_errors_exit
def main(cfg: DictConfig) -> dict[str, Any]:
    """Entry point of ``predict.py``."""
    return predict(cfg)
