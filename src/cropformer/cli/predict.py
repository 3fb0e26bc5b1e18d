"""``python predict.py ckpt=... input=... output=...``: entity masks for any images, any size.

A thin layer over the Python API (``cropformer.api.load_segmenter`` + ``Segmenter.predict_files``):
the checkpoint is resolved (``last`` or a path; ours or an official detectron2 file), the
settings are checked and logged in one line, and the file loop of ``inference.files`` runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cropformer.cli.runtime import runtime_options
from cropformer.cli.validate import auto_or_int, check_values, pixel_decoder_setting, require
from cropformer.run.boundary import EXIT_UNREADABLE, user_errors_exit
from cropformer.run.checkpoint import resolve_ckpt
from cropformer.run.inference_settings import fusion_settings, view_settings
from cropformer.run.setup import in_multirun, start_run
from cropformer.utils.atomic import write_json
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


def _inputs(value: Any) -> str | list[str]:
    """``input=DIR`` / FILE / glob, or a list of them (``input=[scans/a,scans/b]``)."""
    from omegaconf import ListConfig

    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return str(value)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Segment every input image; write per image the id-map PNG, RLE json (and overlay)."""
    from cropformer.api import load_segmenter
    from cropformer.inference.files import every_nth, list_images, parse_shard
    from cropformer.inference.output_modes import OutputMode

    require(cfg, "ckpt", "pass ckpt=/path/to/file.ckpt (or an official .pth/.pkl) or ckpt=last")
    require(cfg, "input", "pass input=DIR, input=FILE or input='photos/*.jpg'")
    check_values(cfg)  # precision, pixel_decoder, views, counts, output mode and layout
    view_chunk = cfg.get("view_chunk", "auto")
    view_chunk = view_chunk if view_chunk in (None, "auto") else int(view_chunk)
    num_workers = auto_or_int(cfg.get("num_workers", "auto"))
    images_per_batch = auto_or_int(cfg.get("images_per_batch", "auto"))
    shard = parse_shard(cfg.get("shard"))
    shard_by = str(cfg.get("shard_by", "frame"))
    layout = str(cfg.get("output_layout", "flat"))
    output = OutputMode(
        format=str(cfg.get("output_format", "fused")),
        score_threshold=cfg.get("score_threshold"),
        min_area=cfg.get("min_area", 0),
        id_dtype=str(cfg.get("id_dtype", "uint16")),
    )
    write = cfg.get("write") or {}
    inputs = _inputs(cfg.input)
    every = cfg.get("every", 1)
    files = every_nth(list_images(inputs), every)
    run_dir = start_run(cfg)
    checkpoint = resolve_ckpt(cfg, cfg.get("train_task"))  # names the run of last
    assert checkpoint is not None
    out_dir = Path(str(cfg.output)) if cfg.get("output") else run_dir / "predictions"

    segmenter = load_segmenter(
        checkpoint,
        device=str(cfg.get("device", "auto")),
        precision=str(cfg.get("precision", "fp32")),
        fusion=fusion_settings(cfg),
        model=cfg.get("model"),  # type: ignore[arg-type]
        official_config=cfg.get("official_config"),
        official_task=cfg.get("official_task"),
        official_classes=cfg.get("official_classes"),
        view_chunk=view_chunk,
        pixel_decoder=pixel_decoder_setting(cfg.get("pixel_decoder", "auto")),
        **runtime_options(cfg),
        **view_settings(cfg),
    )
    share = f" (shard {shard[0]}/{shard[1]} by {shard_by})" if shard[1] > 1 else ""
    log.info(f"predict {len(files)} images{share} -> {out_dir}: {segmenter.describe()}")
    log.info(f"output {output.describe()}, layout {layout}")
    log.info(f"precision {segmenter.predictor.precision}: {segmenter.predictor.precision_parts()}")
    rle_json = write.get("rle_json")
    summary = segmenter.predict_files(
        inputs,
        out_dir,
        id_map=bool(write.get("id_map", True)),
        rle_json=None if rle_json is None else bool(rle_json),
        overlay=bool(write.get("overlay", False)),
        output=output,
        layout=layout,
        id_map_suffix=write.get("id_map_suffix"),
        every=every,
        shard=shard,
        shard_by=shard_by,
        resume=bool(cfg.get("resume", True)),
        num_workers=num_workers,
        images_per_batch=images_per_batch,
    )
    result = {
        **summary.as_dict(),
        "checkpoint": os.path.abspath(checkpoint),
        "step": segmenter.info.step,
        "shard": f"{shard[0]}/{shard[1]}",
        "settings": segmenter.settings,
        "output_mode": {
            **output.settings(),
            "layout": layout,
            "every": every,
            "shard_by": shard_by,
        },
    }
    write_json(run_dir / "predict_summary.json", result)
    print(
        f"{summary.processed} images in {summary.seconds:.1f} s = {summary.images_per_second:.2f} "
        f"images/s on {summary.device}, peak memory {summary.peak_memory_mb:.0f} MB "
        f"({summary.already_done} already done, {len(summary.unreadable)} unreadable)",
        flush=True,
    )
    print(
        json.dumps(
            {
                k: v
                for k, v in result.items()
                if k not in ("unreadable_files", "settings", "producer")
            }
        ),
        flush=True,
    )
    return result


@user_errors_exit
def main(cfg: DictConfig) -> dict[str, Any]:
    """Entry point of ``predict.py``: exits with ``EXIT_UNREADABLE`` (3) when any input file
    could not be read (the others are written; the line and ``predict_summary.json`` name them)."""
    result = predict(cfg)
    if result["unreadable"] and not in_multirun():
        names = ", ".join(result["unreadable_files"])
        print(
            f"error: {result['unreadable']} input file(s) could not be read (skipped, the others "
            f"are written): {names}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_UNREADABLE)
    return result
