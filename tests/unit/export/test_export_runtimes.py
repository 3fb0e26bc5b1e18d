"""Exported files (ONNX Runtime and OpenVINO) against the eager network: raw outputs within 1e-3
x max |value|, fused entities on >= 99.9 % of the pixels, at sizes and image counts other than
the traced ones; settings carried by the file; one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_builders import SETTINGS, metadata, small_net

from cropformer.export.graph import export_formulation
from cropformer.export.session import ExportedNetwork
from cropformer.export.verify import (
    PIXEL_AGREEMENT,
    RAW_TOLERANCE,
    compare,
    raw_outputs,
    relative_error,
    synthetic_photo,
)
from cropformer.inference.fusion import MultiViewFusion
from cropformer.model.ms_deform_attn import MSDeformAttn
from cropformer.utils.errors import UserError

# photos of other sizes and aspect ratios than the traced example (256 x 320)
TRACED = (256, 320)
PHOTOS = [synthetic_photo(300, 410, seed=1), synthetic_photo(500, 260, seed=2)]


def _settings(num_views: int) -> dict:
    return metadata(num_views)["test_settings"]


@pytest.mark.parametrize(
    ("family", "association", "runtime"),
    [
        ("regnet", True, "onnxruntime"),
        ("regnet", True, "openvino"),
        ("swin", True, "onnxruntime"),
        ("swin", True, "openvino"),
        ("r50", False, "openvino"),
        ("r50", False, "onnxruntime"),
        ("hornet", True, "openvino"),
        ("hornet", True, "onnxruntime"),
    ],
)
# the first case of a family exports it (the session fixture): Swin took 15 min on the 2 busy cores
@pytest.mark.timeout(1800)
def test_exported_matches_eager(exported_small, family, association, runtime) -> None:
    net, onnx_path, xml = exported_small(family, association)
    session = ExportedNetwork(xml if runtime == "openvino" else onnx_path, runtime)
    t = 5 if association else 1
    result = compare(net, session, MultiViewFusion(decoder="B-OC"), _settings(t), PHOTOS)
    # dynamic height and width: two view sizes, neither the traced one
    assert len(result["padded_sizes"]) == 2 and TRACED not in result["padded_sizes"], result
    assert result["raw_relative_error"] <= RAW_TOLERANCE, result
    assert result["pixel_agreement"] >= PIXEL_AGREEMENT, result


def test_several_images_in_one_call(exported_small) -> None:
    """The image count is dynamic: B = 2 images (10 views) in one run, as eager."""
    from cropformer.data.collate import collate
    from cropformer.data.views import InferenceViews
    from cropformer.inference.predictor import EvalViews

    net, onnx_path, _ = exported_small("regnet", True)
    views = EvalViews(InferenceViews(**_settings(5)))
    batch = collate([views(PHOTOS[0], 0), views(synthetic_photo(300, 410, seed=3), 1)])
    args = {"num_views": 5, "view_sizes": batch["view_sizes"]}
    with torch.no_grad():
        ref = raw_outputs(net(batch["images"], aux=False, **args))
    got = raw_outputs(ExportedNetwork(onnx_path, "onnxruntime")(batch["images"], **args))
    assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref]
    assert ref[2].shape[0] == 2
    assert max(relative_error(r, g) for r, g in zip(ref, got)) <= RAW_TOLERANCE


def test_file_carries_settings_and_segments_alone(exported_small) -> None:
    """load_segmenter(file) predicts with the stored views and fusion, as eager does."""
    from cropformer.api import load_segmenter
    from cropformer.inference.predictor import EntityPredictor

    net, onnx_path, _ = exported_small("regnet", True)
    seg = load_segmenter(onnx_path, device="cpu")
    assert seg.settings == _settings(5)
    assert seg.predictor.fusion.decoder == "B-OC"
    assert "runtime onnxruntime" in seg.describe()
    eager = EntityPredictor(net, MultiViewFusion(decoder="B-OC"), **_settings(5))
    want = eager.predict(PHOTOS[0])["id_map"]
    got = seg(PHOTOS[0]).prediction["id_map"]
    from cropformer.evaluation.agreement import id_map_agreement

    assert id_map_agreement(want, got).fraction >= PIXEL_AGREEMENT


def test_views_smaller_than_the_minimum_are_padded(exported_small) -> None:
    """A 40 x 50 image: views under 64 px are padded up for the file; outputs keep eager shapes."""
    net, onnx_path, _ = exported_small("r50", False)
    images = torch.randint(0, 256, (1, 3, 64, 32), dtype=torch.uint8)  # padded to 32 by collate
    sizes = torch.tensor([[40, 30]])
    with torch.no_grad():
        ref = raw_outputs(net(images, num_views=1, view_sizes=sizes, aux=False))
    got = raw_outputs(ExportedNetwork(onnx_path, "onnxruntime")(images, 1, sizes))
    assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref]


def test_export_formulation_is_restored_and_equal() -> None:
    net = small_net("regnet")
    images = torch.randint(0, 256, (5, 3, 96, 128)).float()
    with torch.no_grad():
        ref = raw_outputs(net(images, num_views=5, aux=False))
        with export_formulation(net):
            assert {m.impl for m in net.modules() if isinstance(m, MSDeformAttn)} == {"grid_sample"}
            got = raw_outputs(net(images, num_views=5, aux=False))
    assert {m.impl for m in net.modules() if isinstance(m, MSDeformAttn)} == {"gather"}
    assert max(relative_error(r, g) for r, g in zip(ref, got)) <= 1e-5


def test_wrong_view_count_is_one_line_error(exported_small) -> None:
    _, onnx_path, _ = exported_small("regnet", True)
    session = ExportedNetwork(onnx_path, "onnxruntime")
    with pytest.raises(UserError, match="exported for 5 views per image, the batch has 3"):
        session(torch.zeros(3, 3, 64, 64), num_views=3)


def test_foreign_and_missing_files(tmp_path) -> None:
    import onnx

    from cropformer.export.files import read_metadata

    with pytest.raises(UserError, match="not found"):
        read_metadata(tmp_path / "none.onnx")
    plain = tmp_path / "plain.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [vi("x", onnx.TensorProto.FLOAT, [1])], [vi("y", onnx.TensorProto.FLOAT, [1])]
    )
    onnx.save_model(onnx.helper.make_model(graph), str(plain))
    with pytest.raises(UserError, match="no 'cropformer' metadata"):
        read_metadata(plain)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot read it"):
        read_metadata(tmp_path / "junk.onnx")
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(UserError, match="expected a .onnx or an OpenVINO .xml"):
        read_metadata(tmp_path / "x.pt")


def test_bad_runtime_and_precision(exported_small) -> None:
    from cropformer.api.runtimes import check_runtime

    _, onnx_path, _ = exported_small("regnet", True)
    with pytest.raises(UserError, match="runtime=tensorrt: use one of torch, onnxruntime"):
        check_runtime("tensorrt")
    with pytest.raises(UserError, match="precision=bf16 with runtime=onnxruntime"):
        ExportedNetwork(onnx_path, "onnxruntime", precision="bf16")
    with pytest.raises(UserError, match="runtime=onnxruntime runs .onnx files"):
        ExportedNetwork(onnx_path.with_suffix(".xml"), "onnxruntime")


def test_cache_reuses_and_separates(tmp_path, monkeypatch) -> None:
    """Export on first use: the second call reuses the file; other settings get their own."""
    from cropformer.export import cache

    calls = []

    def fake_export(net, path, *, num_views, metadata, fmt):
        calls.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        return path

    monkeypatch.setattr(cache, "export_network", fake_export)
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    meta = metadata(5)
    first = cache.exported_file(ckpt, torch.nn.Identity(), meta)
    again = cache.exported_file(ckpt, torch.nn.Identity(), meta)
    other = cache.exported_file(ckpt, torch.nn.Identity(), {**meta, "fusion": {"decoder": "B-O"}})
    assert first == again != other
    assert len(calls) == 2
    assert first.parent == ckpt.parent / "last.ckpt.exported"
    assert first.suffix == ".onnx"


def test_same_settings_check(tmp_path) -> None:
    from cropformer.api.runtimes import check_same_settings

    meta = metadata(5)
    check_same_settings(meta, dict(meta), tmp_path / "f.onnx")
    with pytest.raises(UserError, match="its test_settings .* differ from this run's"):
        check_same_settings(
            meta, {**meta, "test_settings": dict(SETTINGS, short_side=800)}, tmp_path / "f.onnx"
        )


def test_synthetic_photo_is_deterministic() -> None:
    a, b = synthetic_photo(40, 60, seed=4), synthetic_photo(40, 60, seed=4)
    assert a.shape == (40, 60, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_command_line_runtime_options(tmp_path) -> None:
    from omegaconf import OmegaConf

    from cropformer.cli.runtime import runtime_options

    ok = runtime_options(OmegaConf.create({"runtime": "openvino", "exported": None}))
    assert ok == {"runtime": "openvino", "exported": None, "calibration": None, "compile": False}
    with pytest.raises(UserError, match="exported=f.onnx needs runtime=onnxruntime"):
        runtime_options(OmegaConf.create({"runtime": "torch", "exported": "f.onnx"}))
    with pytest.raises(UserError, match="file not found"):
        runtime_options(OmegaConf.create({"runtime": "onnxruntime", "exported": "none.onnx"}))
    with pytest.raises(UserError, match="runtime=trt"):
        runtime_options(OmegaConf.create({"runtime": "trt"}))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_file_is_quantized_and_runs(exported_small, tmp_path, runtime) -> None:
    """precision=int8: a quantized file of its own (QDQ / FakeQuantize nodes), calibrated on the
    test views of the given images, marked int8 in its metadata, with eager's output shapes."""
    from PIL import Image

    from cropformer.data.collate import collate
    from cropformer.data.views import InferenceViews
    from cropformer.export.files import read_metadata
    from cropformer.export.int8 import calibration_feeds, quantize_onnx, quantize_openvino
    from cropformer.inference.predictor import EvalViews

    net, onnx_path, xml = exported_small("regnet", True)
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i, photo in enumerate(PHOTOS):
        Image.fromarray(photo).save(folder / f"{i}.jpg")
    feeds = calibration_feeds(folder, _settings(5), count=2)
    assert len(feeds) == 2 and feeds[0]["images"].shape[0] == 5
    if runtime == "onnxruntime":
        import onnx

        target = tmp_path / "int8.onnx"
        quantize_onnx(onnx_path, target, feeds)
        ops = {node.op_type for node in onnx.load(str(target)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        import openvino as ov

        target = tmp_path / "int8.xml"
        quantize_openvino(xml, target, feeds)
        ops = {op.get_type_name() for op in ov.Core().read_model(str(target)).get_ops()}
        assert "FakeQuantize" in ops
    meta = read_metadata(target)
    assert meta["precision"] == "int8" and meta["calibration_images"] == 2
    views = EvalViews(InferenceViews(**_settings(5)))
    batch = collate([views(PHOTOS[1], 0)])
    args = {"num_views": 5, "view_sizes": batch["view_sizes"]}
    with torch.no_grad():
        ref = raw_outputs(net(batch["images"], aux=False, **args))
    got = raw_outputs(ExportedNetwork(target, runtime)(batch["images"], **args))
    assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref]
    assert all(torch.isfinite(g).all() for g in got)
