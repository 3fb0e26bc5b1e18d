"""Rewrite the one-sided ``DFT`` nodes of an ONNX graph into two-sided ones (same values).

HorNet's global filter is ``rfft2`` / ``irfft2``. The ONNX exporter writes their last axis as a
one-sided ``DFT`` (real input ``[..., 1]`` to half spectrum; half spectrum back to a real
signal). OpenVINO's ONNX reader maps these to its ``RDFT`` / ``IRDFT`` ops without the trailing
real/imaginary axis that ONNX's ``DFT`` carries: the forward transform keeps a stray ``1`` axis
(rank + 1, the filter product then fails shape inference in a ``Multiply``), and the inverse
loses the ``[..., 2]`` axis that the following real-part ``Slice`` / ``Squeeze`` expect. Its
two-sided ``DFT`` / ``IDFT`` mapping is right. So the file carries only two-sided transforms:

- forward, one-sided: the two-sided transform, then the first ``n // 2 + 1`` bins (``Slice``);
- inverse, one-sided (complex half spectrum ``X`` of ``m`` bins to ``n`` real samples): ``X``
  truncated or zero-padded to ``n // 2 + 1`` bins (as ``torch.fft.irfft``), completed to ``n``
  bins by conjugate symmetry (``Z[k] = conj(X[n - k])``), then the two-sided inverse, of which
  the real part (``[..., 1]``, the one-sided inverse's output) is the one-sided inverse: the
  imaginary parts of the zero and Nyquist bins drop out, as in ``irfft``.

The rewritten graph is valid ONNX with the same values, so ONNX Runtime, OpenVINO (fixed reader
or not) and other runtimes read one file. The cost is a complex instead of a real transform
along one axis of the filter's small maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rewrite_onesided_dft(model: Any) -> int:
    """Replace every one-sided ``DFT`` of ``model`` (an ``onnx.ModelProto``, edited in place).

    Returns:
        The number of nodes replaced.

    Raises:
        ValueError: a ``DFT`` whose axis is not a constant (opset >= 20 with a computed axis).
    """
    count = 0
    graphs = [model.graph.node] + [function.node for function in model.functions]
    constants = {init.name: init for init in model.graph.initializer}
    for nodes in graphs:
        new_nodes = []
        for node in nodes:
            if node.op_type == "DFT" and node.domain in ("", "ai.onnx") and _onesided(node):
                new_nodes += _replacement(node, _axis(node, constants, nodes), f"dft2s{count}")
                count += 1
            else:
                new_nodes.append(node)
        del nodes[:]
        nodes.extend(new_nodes)
    return count


def _attribute(node: Any, name: str, default: int) -> int:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return int(helper.get_attribute_value(attr))
    return default


def _onesided(node: Any) -> bool:
    return _attribute(node, "onesided", 0) == 1


def _axis(node: Any, constants: dict[str, Any], nodes: Any) -> int:
    """The transform axis: the attribute (opset 17-19) or a constant third input (opset 20+)."""
    from onnx import numpy_helper

    if len(node.input) < 3 or not node.input[2]:
        return _attribute(node, "axis", 1)
    name = node.input[2]
    if name in constants:
        return int(numpy_helper.to_array(constants[name]).reshape(-1)[0])
    for other in nodes:
        if other.op_type == "Constant" and name in other.output:
            return int(numpy_helper.to_array(other.attribute[0].t).reshape(-1)[0])
    raise ValueError(f"DFT node {node.name}: its axis {name} is not a constant")


def _replacement(node: Any, axis: int, prefix: str) -> list[Any]:
    """Nodes computing ``node``'s output with a two-sided ``DFT`` (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    out: list[Any] = []

    def const(name: str, value: Any) -> str:
        full = f"{prefix}_{name}"
        array = np.asarray(value)
        out.append(helper.make_node("Constant", [], [full], value=numpy_helper.from_array(array)))
        return full

    def add(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        full = f"{prefix}_{name}"
        out.append(helper.make_node(op, inputs, [full], name=full, **attrs))
        return full

    signal = node.input[0]
    inverse = _attribute(node, "inverse", 0)
    axes = const("axes", np.array([axis], dtype=np.int64))
    zero = const("zero", np.array([0], dtype=np.int64))
    one = const("one", np.array([1], dtype=np.int64))
    two = const("two", np.array([2], dtype=np.int64))
    size = add("Gather", [add("Shape", [signal], "shape"), axes], "size", axis=0)
    # n, the signal length along the axis: dft_length when given, else the input's size
    if len(node.input) > 1 and node.input[1]:
        n = add("Cast", [add("Reshape", [node.input[1], one], "length")], "n", to=TensorProto.INT64)
    else:
        n = size
    half = add("Add", [add("Div", [n, two], "n_div2"), one], "half")  # n // 2 + 1 (n >= 0)
    # the axis as the node had it: an attribute (opset 17-19) or its third input (opset 20+)
    axis_input = node.input[2] if len(node.input) > 2 and node.input[2] else None
    two_sided: dict[str, int] = {"inverse": inverse, "onesided": 0}
    if axis_input is None:
        two_sided["axis"] = axis
    if not inverse:
        full = add("DFT", list(node.input), "full", **two_sided)
        out.append(
            helper.make_node("Slice", [full, zero, half, axes], list(node.output), name=node.name)
        )
        return out
    # inverse: half spectrum X (m bins) -> n bins: X[0 : n//2 + 1] (zero-padded), conj tail
    m = size
    kept = add("Slice", [signal, zero, add("Min", [m, half], "kept_bins"), axes], "kept")
    missing = add("Max", [add("Sub", [half, m], "missing_raw"), zero], "missing")
    head = add("Pad", [kept, add("Concat", [zero, missing], "pads", axis=0), "", axes], "head")
    # bins n - m' .. 1 of the head (m' = n // 2 + 1), reversed: Z[k] = conj(X[n - k]), k >= m'
    last = add("Sub", [n, half], "tail_first")
    minus_one = const("minus_one", np.array([-1], dtype=np.int64))
    tail = add("Slice", [head, last, zero, axes, minus_one], "tail")
    conj = const("conj", np.array([1.0, -1.0], dtype=np.float32))
    tail = add("Mul", [tail, add("CastLike", [conj, signal], "conj_t")], "tail_conj")
    spectrum = add("Concat", [head, tail], "spectrum", axis=axis)
    # the spectrum has n bins: no dft_length
    inputs = [spectrum] if axis_input is None else [spectrum, "", axis_input]
    signal_out = add("DFT", inputs, "signal", **two_sided)
    # the real part, [..., 1]: the one-sided inverse's output shape (as ONNX Runtime gives it)
    real = [signal_out, zero, one, minus_one]
    out.append(helper.make_node("Slice", real, list(node.output), name=node.name))
    return out
