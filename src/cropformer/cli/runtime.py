"""``runtime=`` / ``exported=`` / ``calibration=`` of predict.py and eval.py.

Checked once, then handed to ``load_segmenter`` (predict) or to the evaluated module (eval).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cropformer.api.runtimes import check_runtime
from cropformer.utils.errors import UserError


def runtime_options(cfg: DictConfig) -> dict[str, Any]:
    """``{"runtime", "exported", "calibration", "compile"}`` from the command line, checked."""
    runtime = str(cfg.get("runtime") or "torch")
    check_runtime(runtime)
    exported = cfg.get("exported")
    if exported is not None and runtime == "torch":
        raise UserError(f"exported={exported} needs runtime=onnxruntime or runtime=openvino")
    if exported is not None and not Path(str(exported)).is_file():
        raise UserError(f"exported={exported}: file not found")
    calibration = cfg.get("calibration")
    compiled = cfg.get("compile", False)
    if not isinstance(compiled, bool):
        raise UserError(f"compile={compiled!r}: use true or false")
    if compiled and runtime != "torch":
        raise UserError(f"compile=true is for runtime=torch, not runtime={runtime}")
    return {
        "runtime": runtime,
        "exported": None if exported is None else str(exported),
        "calibration": None if calibration is None else str(calibration),
        "compile": compiled,
    }


def eval_runtime_network(
    checkpoint: str | Path,
    module: Any,
    model_name: str,
    step: int | None,
    views: Mapping[str, Any],
    *,
    runtime: str,
    exported: str | None,
    calibration: str | None,
    compile: bool = False,
    precision: str = "fp32",
) -> Any:
    """The runtime network that eval.py's module runs instead of its eager network."""
    from cropformer.api import test_settings
    from cropformer.api.runtimes import runtime_network

    return runtime_network(
        checkpoint,
        module.net,
        model_name=model_name,
        step=step,
        settings=test_settings(views),
        fusion=OmegaConf.to_container(OmegaConf.create(dict(module.hparams["fusion"]))),  # type: ignore[arg-type]
        runtime=runtime,
        precision=precision,
        exported=exported,
        calibration=calibration,
        task=str(module.task),
        classes=module.classes.to_json() if module.classes is not None else None,
    )


def runtime_precision(cfg: DictConfig) -> str:
    """eval.py with a runtime: ``precision=`` is the runtime's (fp32 / int8 / bf16), and the
    trainer stays fp32 (``cfg.precision`` is cleared)."""
    value = str(cfg.get("precision") or "fp32")
    check_runtime(str(cfg.get("runtime")), value)
    OmegaConf.update(cfg, "precision", None, merge=False)
    return value
