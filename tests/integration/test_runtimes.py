"""predict.py and eval.py with runtime=onnxruntime|openvino on a tiny checkpoint trained here:
export on first use into <ckpt>.exported/, same entities and the same AP^e as eager."""

from __future__ import annotations

from pathlib import Path

import pytest
from _integration_helpers import tiny_cfg

pytest.importorskip("onnxruntime", reason="needs the deploy extra (onnx, onnxruntime, openvino)")
pytest.importorskip("openvino", reason="needs the deploy extra (onnx, onnxruntime, openvino)")

from cropformer.cli.eval import evaluate  # noqa: E402
from cropformer.cli.predict import predict  # noqa: E402
from cropformer.cli.train import train  # noqa: E402
from cropformer.evaluation.agreement import id_map_agreement  # noqa: E402
from cropformer.evaluation.writers import read_id_map_png  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runtimes")
    return tmp, train(tiny_cfg(tmp, data_dir=tmp / "data"))


@pytest.mark.slow
def test_predict_and_eval_with_runtimes(trained, tmp_path):
    tmp, summary = trained
    ckpt = Path(summary["last_checkpoint"])
    inputs = sorted((tmp / "data").rglob("*.jpg"))[:2]
    maps = {}
    for runtime in ("torch", "onnxruntime", "openvino"):
        out = tmp_path / runtime
        cfg = tiny_cfg(
            tmp,
            f"ckpt={ckpt}",
            f"input={inputs[0].parent}/{inputs[0].name}",
            f"output={out}",
            f"runtime={runtime}",
            name="predict",
        )
        predict(cfg)
        maps[runtime] = read_id_map_png(next(out.glob("*_ids.png")))
    for runtime in ("onnxruntime", "openvino"):
        assert id_map_agreement(maps["torch"], maps[runtime]).fraction >= 0.999
    assert len(list((ckpt.parent / f"{ckpt.name}.exported").glob("*.onnx"))) == 1
    ap = {}
    for runtime in ("torch", "openvino"):
        cfg = tiny_cfg(
            tmp, f"ckpt={ckpt}", f"runtime={runtime}", name="eval", data_dir=tmp / "data"
        )
        ap[runtime] = evaluate(cfg)["entity_ap"]
    assert ap["openvino"] == pytest.approx(ap["torch"], abs=0.2)
