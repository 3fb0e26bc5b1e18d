"""Write the exported network to an ONNX or OpenVINO file, with its settings as metadata.

ONNX: ``torch.onnx.export(dynamo=True)`` (``torch.export`` traces with symbolic sizes, so the
file takes any height and width that are multiples of 32 and any number of images), opset 18, one
self-contained file (weights inside; < 2 GB for every official model). OpenVINO: the ONNX file
converted by ``openvino.convert_model`` and saved as IR (``.xml`` + ``.bin``, fp32 weights).

The metadata (``METADATA_KEY``, a JSON object) holds everything a runtime needs to predict with
the file alone: views per image, the test-time view settings, the fusion options, the model name,
the checkpoint it came from (file name and step, never a machine path) and the versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cropformer.export.dft import rewrite_onesided_dft
from cropformer.export.graph import INPUT_NAMES, OUTPUT_NAMES, ExportGraph, export_formulation
from cropformer.utils.errors import UserError

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "openvino")
METADATA_KEY = "cropformer"
#: bumped when the graph's inputs/outputs or the metadata change meaning
FORMAT_VERSION = 1
OPSET = 18
# Smallest padded side the exported graph takes (torch.export specialises sizes of 1, so the
# stride-32 map must be at least 2 wide); the runtime pads smaller views up to it.
MIN_SIDE = 64
MAX_SIDE = 32 * 1024


def suffix_of(fmt: str) -> str:
    """File suffix of an export format."""
    return {"onnx": ".onnx", "openvino": ".xml"}[fmt]


def export_network(
    net: nn.Module,
    path: str | Path,
    *,
    num_views: int,
    metadata: Mapping[str, Any],
    fmt: str = "onnx",
    example_size: tuple[int, int] = (256, 320),
    decisions: bool = False,
) -> Path:
    """Export ``net`` (a ``CropFormer``) for ``num_views`` views per image to ``path``.

    Args:
        net: the network; it is put in eval mode and exported in fp32 on the CPU.
        path: the file to write (``.onnx``; ``.xml`` for OpenVINO, next to its ``.bin``). The
            file appears complete or not at all (written under a temporary name, then renamed).
        num_views: T (1 + crops of the test settings; 1 for Mask2Former).
        metadata: test settings, fusion options, model and checkpoint description; stored in the
            file with the graph's contract (``num_views``, outputs, sizes) added.
        fmt: ``onnx`` or ``openvino``.
        example_size: padded (H, W) of the tracing example (any multiples of 32 >= 64 with
            H != W; the exported graph takes every size).
        decisions: the file also returns the logits behind the decoder's attention-mask
            decisions (metadata ``decision_outputs``), for the verification on the same
            decisions (``cropformer.export.decisions``). Not for deployment.

    Returns:
        The path written.
    """
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"format={fmt}: use one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(net.cpu().float().eval(), num_views, decisions=decisions).eval()
    meta = {
        **dict(metadata),
        "format_version": FORMAT_VERSION,
        "num_views": num_views,
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES[: 4 if graph.has_batch_level else 2]),
        "decision_outputs": graph.decision_count,
        "size_divisibility": int(getattr(net, "size_divisibility", 32)),
        "min_side": MIN_SIDE,
        "versions": _versions(),
    }
    tmp_onnx = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    started = time.perf_counter()
    try:
        with export_formulation(graph.net), torch.no_grad():
            _write_onnx(graph, tmp_onnx, example_size, meta)
        if fmt == "onnx":
            os.replace(tmp_onnx, path)
        else:
            _write_openvino(tmp_onnx, path, meta)
    finally:
        tmp_onnx.unlink(missing_ok=True)
    log.info(f"exported {fmt} {path.name} in {time.perf_counter() - started:.0f} s")
    return path


def _write_onnx(
    graph: ExportGraph, path: Path, example_size: tuple[int, int], meta: Mapping[str, Any]
) -> None:
    import onnx
    from torch.export import Dim

    h, w = example_size
    if h % 32 or w % 32 or min(h, w) < MIN_SIDE or h == w:
        raise ValueError(f"example_size={example_size}: distinct multiples of 32, >= {MIN_SIDE}")
    t = graph.num_views
    # 2 images in the example: a size of 1 would be specialised (fixed) by torch.export
    images = torch.randint(0, 256, (2 * t, 3, h, w), generator=torch.Generator().manual_seed(0))
    view_sizes = torch.tensor([[h, w]] * (2 * t), dtype=torch.long)
    side = {"min": MIN_SIDE // 32, "max": MAX_SIDE // 32}
    images_dims = {
        0: t * Dim("images", min=1, max=4096),
        2: 32 * Dim("h32", **side),
        3: 32 * Dim("w32", **side),
    }
    program = torch.onnx.export(
        graph,
        (images.float(), view_sizes),
        None,
        dynamo=True,
        opset_version=OPSET,
        input_names=list(INPUT_NAMES),
        output_names=[*meta["outputs"], *(f"decision{i}" for i in range(graph.decision_count))],
        dynamic_shapes={"images": images_dims, "view_sizes": {0: images_dims[0]}},
        external_data=False,
        verbose=False,
    )
    assert program is not None
    model = program.model_proto
    # two-sided DFTs only (same values): OpenVINO misreads the one-sided ones (export.dft)
    rewrite_onesided_dft(model)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta, sort_keys=True)})
    onnx.save_model(model, str(path))


def _write_openvino(onnx_path: Path, path: Path, meta: Mapping[str, Any]) -> None:
    import openvino as ov

    if path.suffix != ".xml":
        raise UserError(f"output={path}: an OpenVINO model is written as .xml (+ .bin)")
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(meta, sort_keys=True), [METADATA_KEY])
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    # fp32 weights: OpenVINO would otherwise store fp16 (results then differ from eager fp32)
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata stored in an exported ``.onnx`` or OpenVINO ``.xml`` file.

    Raises:
        UserError: not a file exported by this package (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported file {path}: not found")
    try:
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            text = props.get(METADATA_KEY)
        elif path.suffix == ".xml":
            import openvino as ov

            rt = ov.Core().read_model(str(path)).get_rt_info()
            text = rt[METADATA_KEY].astype(str) if METADATA_KEY in rt else None
        else:
            raise UserError(f"exported file {path}: expected a .onnx or an OpenVINO .xml file")
    except UserError:
        raise
    except Exception as err:  # a damaged or foreign file
        raise UserError(f"exported file {path}: cannot read it ({err})") from err
    if not text:
        raise UserError(
            f"exported file {path}: no '{METADATA_KEY}' metadata; export it with "
            "`python -m cropformer.cli.export ckpt=...`"
        )
    meta: dict[str, Any] = json.loads(text)
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"exported file {path}: export format {meta.get('format_version')}, this package "
            f"reads {FORMAT_VERSION}; export the checkpoint again"
        )
    return meta


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {"torch": str(torch.__version__)}
    for name in ("cropformer", "onnx", "openvino"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out
