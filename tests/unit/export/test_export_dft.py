"""One-sided DFT rewrite (``cropformer.export.dft``): the exported FFT filter of HorNet, and
``irfft`` with a length that pads or truncates the spectrum, give the eager values on ONNX
Runtime and OpenVINO at sizes other than the traced one (odd widths included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cropformer.export.dft import rewrite_onesided_dft
from cropformer.model.hornet import GlobalLocalFilter

TOLERANCE = 1e-5  # x max |value|: fp32 transforms of a few dozen points


class _FilterOnly(nn.Module):
    """HorNet's global-local filter (stored 12 x 7, resized to each map's rfft size)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.filter = GlobalLocalFilter(8, h=12, w=7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.filter(x)


class _Truncate(nn.Module):
    """``irfft`` to 3 samples fewer than the signal (the spectrum truncated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1), n=x.shape[-1] - 3, dim=-1)


def _export(module: nn.Module, path, example: torch.Tensor):
    import onnx
    from torch.export import Dim

    dims = {2: Dim("h", min=4, max=256), 3: Dim("w", min=8, max=256)}
    program = torch.onnx.export(
        module.eval(),
        (example,),
        None,
        dynamo=True,
        opset_version=18,
        input_names=["x"],
        dynamic_shapes={"x": dims},
        verbose=False,
    )
    model = program.model_proto
    onesided = [n for n in model.graph.node if n.op_type == "DFT" and _onesided(n)]
    assert onesided, "the exporter no longer writes one-sided DFTs: revisit the rewrite"
    assert rewrite_onesided_dft(model) == len(onesided)
    assert not [n for n in model.graph.node if n.op_type == "DFT" and _onesided(n)]
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path))
    return path


def _onesided(node) -> bool:
    return any(a.name == "onesided" and a.i == 1 for a in node.attribute)


def _run(path, runtime: str, x: np.ndarray) -> list[np.ndarray]:
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return list(session.run(None, {"x": x}))
    import openvino as ov

    compiled = ov.Core().compile_model(
        ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    result = compiled.create_infer_request().infer({"x": x})
    return [np.asarray(result[o]) for o in compiled.outputs]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dft")
    filter_file = _export(_FilterOnly(), folder / "filter.onnx", torch.randn(2, 8, 16, 20))
    truncate_file = _export(_Truncate(), folder / "truncate.onnx", torch.randn(2, 3, 5, 20))
    return filter_file, truncate_file


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("size", [(16, 20), (24, 33), (9, 14)])
def test_fft_filter_matches_eager(exported, runtime: str, size: tuple[int, int]) -> None:
    x = torch.randn(2, 8, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _FilterOnly()(x)
    (got,) = _run(exported[0], runtime, x.numpy())
    assert got.shape == tuple(want.shape)
    error = float(np.abs(got - want.numpy()).max()) / float(want.abs().max())
    assert error <= TOLERANCE, error


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("width", [20, 17])
def test_irfft_truncates_as_torch(exported, runtime: str, width: int) -> None:
    x = torch.randn(2, 3, 4, width, generator=torch.Generator().manual_seed(2))
    want = _Truncate()(x)
    (got,) = _run(exported[1], runtime, x.numpy())
    assert got.shape == tuple(want.shape)
    assert float(np.abs(got - want.numpy()).max()) <= TOLERANCE * float(want.abs().max())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("length", [6, 7, 12, 13, 20])
def test_one_sided_inverse_is_irfft(runtime: str, length: int) -> None:
    """A half spectrum of 7 bins to ``length`` samples (bins truncated, exact, zero-padded):
    the rewritten node gives ``irfft(x, n=length)`` as numpy and torch define it, shape
    ``[..., length, 1]`` as the one-sided node. (ONNX Runtime's own one-sided inverse agrees
    only at the lengths 12 and 13, the ones a real signal's half spectrum has.)"""
    import onnxruntime as ort
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("DFT", ["x", "n"], ["y"], inverse=1, onesided=1, axis=1, name="d")
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node],
        "g",
        [vi("x", TensorProto.FLOAT, [3, 7, 2])],
        [vi("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(length, dtype=np.int64), "n")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert rewrite_onesided_dft(model) == 1
    x = np.random.default_rng(3).standard_normal((3, 7, 2)).astype(np.float32)
    want = np.fft.irfft(x[..., 0] + 1j * x[..., 1], n=length, axis=1)[..., None]
    if runtime == "onnxruntime":
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"x": x})[0]
    else:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU")
        got = next(iter(compiled.create_infer_request().infer({"x": x}).values()))
    assert got.shape == want.shape == (3, length, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_axis_that_is_not_a_constant_is_refused() -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("DFT", ["x", "", "axis"], ["y"], onesided=1, name="dft")
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node],
        "g",
        [vi("x", TensorProto.FLOAT, [2, 8, 1]), vi("axis", TensorProto.INT64, [])],
        [vi("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(ValueError, match="DFT node dft: its axis axis is not a constant"):
        rewrite_onesided_dft(model)
    assert isinstance(model, onnx.ModelProto)
