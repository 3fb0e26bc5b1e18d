"""Fixtures of the export tests: small networks exported once per session (export is slow)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip("onnxruntime", reason="needs the deploy extra (onnx, onnxruntime, openvino)")
pytest.importorskip("openvino", reason="needs the deploy extra (onnx, onnxruntime, openvino)")

from export_builders import metadata, small_net  # noqa: E402


@pytest.fixture(scope="session")
def exported_small(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple]:
    """``exported_small(family, association)`` -> (net, .onnx path, .xml path), made once."""
    from cropformer.export.files import _write_openvino, export_network, read_metadata

    made: dict[tuple[str, bool], tuple] = {}

    def get(family: str, association: bool = True) -> tuple:
        key = (family, association)
        if key not in made:
            net = small_net(family, association)
            folder = tmp_path_factory.mktemp(f"export_{family}_{int(association)}")
            t = 5 if association else 1
            onnx_path = export_network(
                net, folder / "net.onnx", num_views=t, metadata=metadata(t), fmt="onnx"
            )
            xml = folder / "net.xml"
            _write_openvino(onnx_path, xml, read_metadata(onnx_path))
            made[key] = (net, onnx_path, xml)
        return made[key]

    return get
