"""``python -m cropformer.cli.export ckpt=... format=onnx|openvino``: export a checkpoint.

Writes one ONNX file (or OpenVINO ``.xml`` + ``.bin``) with the network (backbone, pixel decoder,
image-level pass, association, batch-level pass) for the test views of the checkpoint, any image
height and width, the test settings and fusion options inside (``cropformer.export``). With
``verify=true`` (default) it then runs the file and the eager network on one image and prints
how far the raw outputs are apart and how many pixels the fused entities share. Prints one JSON
line (path, format, precision, seconds, megabytes, agreement).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cropformer.cli.validate import require
from cropformer.export.files import EXPORT_FORMATS, export_network, suffix_of
from cropformer.run.boundary import user_errors_exit
from cropformer.run.inference_settings import fusion_settings, view_settings
from cropformer.utils.errors import UserError


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt``; returns the summary printed as JSON."""
    from cropformer.api import read_checkpoint, test_settings
    from cropformer.api.runtimes import export_metadata, num_views_of
    from cropformer.export.cache import exported_file

    require(cfg, "ckpt", "pass ckpt=/path/to/file.ckpt (or an official .pth/.pkl)")
    fmt = str(cfg.get("format", "onnx"))
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"format={fmt}: use one of {', '.join(EXPORT_FORMATS)}")
    precision = str(cfg.get("precision", "fp32"))
    if precision not in ("fp32", "int8"):
        raise UserError(f"precision={precision}: an exported file is fp32 or int8")
    output = Path(str(cfg.output)) if cfg.get("output") else None
    if output is not None and output.suffix != suffix_of(fmt):
        raise UserError(f"output={output}: a {fmt} file ends in {suffix_of(fmt)}")
    calibration = cfg.get("calibration")
    if precision == "int8" and not calibration:
        raise UserError("precision=int8 needs calibration=<folder or glob of training images>")
    started = time.perf_counter()
    loaded = read_checkpoint(
        str(cfg.ckpt),
        fusion=fusion_settings(cfg),
        model=cfg.get("model"),  # type: ignore[arg-type]
        official_config=cfg.get("official_config"),
        official_task=cfg.get("official_task"),
        official_classes=cfg.get("official_classes"),
    )
    net, fusion = loaded.build()
    info = loaded.info
    settings = test_settings(info.stored_views, **view_settings(cfg))
    metadata = export_metadata(
        info.path,
        model_name=info.model,
        step=info.step,
        settings=settings,
        fusion=dict(loaded.fusion_config),
        num_views=num_views_of(settings),
        task=loaded.task,
        classes=loaded.classes,
    )
    quantize = None
    if precision == "int8":
        from cropformer.export.int8 import quantizer

        quantize = quantizer(
            fmt,
            str(calibration),
            settings=settings,
            count=int(cfg.get("calibration_images", 8)),
        )
    if output is None:
        path = exported_file(
            info.path, net, metadata, fmt=fmt, precision=precision, quantize=quantize
        )
    else:
        if precision == "int8":
            assert quantize is not None
            fp32 = output.with_name(f"{output.stem}.fp32{output.suffix}")
            export_network(net, fp32, num_views=metadata["num_views"], metadata=metadata, fmt=fmt)
            quantize(fp32, output)
        else:
            export_network(net, output, num_views=metadata["num_views"], metadata=metadata, fmt=fmt)
        path = output
    size = path.stat().st_size + (
        path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0
    )
    summary: dict[str, Any] = {
        "path": str(path),
        "format": fmt,
        "precision": precision,
        "model": info.model,
        "num_views": metadata["num_views"],
        "seconds": round(time.perf_counter() - started, 1),
        "megabytes": round(size / 2**20, 1),
    }
    if cfg.get("verify", True):
        from cropformer.export.verify import verify_file

        agreement = verify_file(path, net, fusion, settings, image=cfg.get("verify_image"))
        if precision != "fp32":  # the 1e-3 / 99.9 % bounds are those of an fp32 export
            agreement.pop("passed")
        summary["agreement"] = agreement
    print(json.dumps(summary), flush=True)
    return summary


@user_errors_exit
def run(cfg: DictConfig) -> dict[str, Any]:
    """``export`` with one ``error:`` line for problems the user can fix."""
    return export(cfg)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: ``key=value`` overrides of ``conf/export.yaml``."""
    from cropformer.cli.validate import check_command_line
    from cropformer.run.config import compose_config, find_conf_dir

    args = list(sys.argv[1:] if argv is None else argv)
    conf_dir = find_conf_dir()
    check_command_line("export", conf_dir, args)
    try:
        cfg = compose_config(args, config_name="export", conf_dir=conf_dir)
    except Exception as err:  # Hydra's override errors: one line
        print(f"error: {err}".splitlines()[0], file=sys.stderr, flush=True)
        raise SystemExit(2) from err
    return run(cfg)


if __name__ == "__main__":
    main()
