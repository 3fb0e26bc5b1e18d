"""An exported network run by ONNX Runtime or OpenVINO, called like the eager network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropformer.schema import Outputs
from cropformer.utils.errors import UserError

log = logging.getLogger(__name__)

#: ``runtime=`` values of predict.py / eval.py / ``load_segmenter``; ``torch`` is the eager network
RUNTIMES = ("torch", "onnxruntime", "openvino")
#: precisions a runtime computes in: fp32 everywhere; bf16 in OpenVINO on CPUs with bf16 units;
#: int8 is a property of the (quantized) file, not of the runtime
RUNTIME_PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}
_INSTALL = "pip install 'cropformer[deploy]'"


def default_runtime_for(path: str | Path) -> str:
    """``onnxruntime`` for ``.onnx``, ``openvino`` for ``.xml``."""
    return "openvino" if Path(path).suffix == ".xml" else "onnxruntime"


class ExportedNetwork(nn.Module):
    """An exported file (``cropformer.export``) behind the ``CropFormer`` call contract.

    Args:
        path: ``.onnx`` (ONNX Runtime or OpenVINO) or OpenVINO ``.xml``.
        runtime: ``onnxruntime`` or ``openvino``.
        threads: intra-op threads (None: the runtime's default, all cores).
        precision: ``fp32``, or ``bf16`` (OpenVINO's inference precision hint).

    ``metadata`` holds the file's test settings, fusion options and contract. A file exported
    with ``decisions=True`` also returns the logits of the decoder's attention-mask decisions:
    ``last_decisions`` holds those of the latest call (``cropformer.export.decisions``).
    The module has no parameters; ``to()`` accepts the CPU only (``cuda`` needs ONNX Runtime's
    CUDA provider: ``device="cuda"`` with ``runtime=onnxruntime`` uses it when installed).
    """

    def __init__(
        self,
        path: str | Path,
        runtime: str,
        *,
        threads: int | None = None,
        precision: str = "fp32",
        device: str = "cpu",
    ) -> None:
        super().__init__()
        from cropformer.export.files import read_metadata

        if runtime not in RUNTIMES[1:]:
            raise UserError(f"runtime={runtime}: an exported file runs on {RUNTIMES[1:]}")
        if precision not in RUNTIME_PRECISIONS[runtime]:
            raise UserError(
                f"precision={precision} with runtime={runtime}: use one of "
                f"{RUNTIME_PRECISIONS[runtime]} (int8 is an exported file of its own: export "
                "with precision=int8)"
            )
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.runtime = runtime
        self.precision = precision
        self.num_views = int(self.metadata["num_views"])
        self.output_names: list[str] = list(self.metadata["outputs"])
        self.decision_outputs = int(self.metadata.get("decision_outputs", 0))
        #: the attention-mask decision logits of the latest call (files exported with decisions)
        self.last_decisions: list[Tensor] = []
        self.min_side = int(self.metadata.get("min_side", 64))
        self.divisibility = int(self.metadata.get("size_divisibility", 32))
        self._device = torch.device(device)
        if runtime == "onnxruntime":
            self._run = _onnxruntime_session(self.path, threads, self._device)
        else:
            self._run = _openvino_session(self.path, threads, precision, self._device)

    def extra_repr(self) -> str:
        return f"{self.path.name}, runtime={self.runtime}, precision={self.precision}"

    def to(self, *args: Any, **kwargs: Any) -> ExportedNetwork:  # type: ignore[override]
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and torch.device(device).type != self._device.type:
            raise UserError(
                f"device={device}: this {self.runtime} session runs on {self._device.type}; "
                "load it with that device"
            )
        return self

    def forward(
        self,
        images: Tensor,
        num_views: int = 1,
        view_sizes: Tensor | None = None,
        **ignored: Any,
    ) -> Outputs:
        """Same contract as ``CropFormer.forward`` (``aux``/``view_chunk`` are accepted and
        ignored: the file returns the final predictions of all views).

        Shape: images (N, 3, H, W) uint8/float 0..255; view_sizes (N, 2).
        """
        if num_views != self.num_views:
            raise UserError(
                f"{self.path.name} was exported for {self.num_views} views per image, the "
                f"batch has {num_views}; use the test settings stored in the file"
            )
        n, _, h, w = images.shape
        if view_sizes is None:
            view_sizes = torch.tensor([[h, w]] * n)
        div = self.divisibility
        hp = max(self.min_side, -(-h // div) * div)
        wp = max(self.min_side, -(-w // div) * div)
        x = images.float()
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))
        feeds = {
            "images": np.ascontiguousarray(x.cpu().numpy()),
            "view_sizes": view_sizes.cpu().to(torch.long).numpy(),
        }
        arrays = self._run(feeds)
        out = [torch.from_numpy(np.asarray(a)) for a in arrays]
        main = len(self.output_names)
        self.last_decisions = out[main : main + self.decision_outputs]
        out = out[:main]
        if (hp, wp) != (h, w):  # drop the extra padding's stride-4 cells
            h4, w4 = -(-h // div) * div // 4, -(-w // div) * div // 4
            out[1] = out[1][..., :h4, :w4]
            if len(out) > 2:
                out[3] = out[3][..., :h4, :w4]
        result: Outputs = {
            "image_level": {"pred_logits": out[0], "pred_masks": out[1], "aux_outputs": []}
        }
        if len(out) > 2:
            result["batch_level"] = {"pred_logits": out[2], "pred_masks": out[3], "aux_outputs": []}
        return result


def _onnxruntime_session(path: Path, threads: int | None, device: torch.device) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise UserError(f"runtime=onnxruntime needs the onnxruntime package: {_INSTALL}") from err
    if path.suffix != ".onnx":
        raise UserError(f"runtime=onnxruntime runs .onnx files, got {path.name}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(
                "device=cuda with runtime=onnxruntime needs onnxruntime-gpu "
                "(CUDAExecutionProvider); use device=cpu"
            )
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(path), options, providers=providers)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(session.run(None, feeds))

    return run


def _openvino_session(path: Path, threads: int | None, precision: str, device: torch.device) -> Any:
    try:
        import openvino as ov
    except ImportError as err:
        raise UserError(f"runtime=openvino needs the openvino package: {_INSTALL}") from err
    if device.type != "cpu":
        raise UserError("runtime=openvino runs on device=cpu here")
    core = ov.Core()
    config: dict[str, Any] = {
        # fp32 unless asked: on CPUs with bf16 units OpenVINO would otherwise compute in bf16
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(feeds)
        return [np.array(result[o], copy=True) for o in outputs]

    return run
