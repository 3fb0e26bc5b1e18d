"""``compile=true`` (``runtime=torch``): ``torch.compile`` of the network in ``load_segmenter`` /
predict.py and eval.py gives eager's outputs, within the export's acceptance (raw outputs within
1e-3 x max |value|, fused entities on >= 99.9 % of the pixels; ``cropformer.export.verify``).

Slow: inductor compiles C++ kernels for the CPU, several minutes on the shared 2 cores.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from _integration_helpers import TINY_DATA, tiny_cfg
from _quick_checkpoints import lightning_checkpoint

from cropformer.export.verify import PIXEL_AGREEMENT, RAW_TOLERANCE, compare, synthetic_photo

#: CropFormer tiny with the 4 test crops (5 views: both passes and the association compiled),
#: at the tiny synthetic data's test views
MODEL = ["model=cropformer_tiny", "data.test_short_side=128", "data.test_max_size=192"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lightning_checkpoint(tmp_path_factory.mktemp("compile") / "tiny.ckpt", MODEL)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_load_segmenter_compile_matches_eager(checkpoint: Path) -> None:
    """The compiled network (dynamic shapes: two image sizes) against the eager one."""
    from cropformer.api import load_segmenter

    eager = load_segmenter(checkpoint, device="cpu")
    compiled = load_segmenter(checkpoint, device="cpu", compile=True)
    net = compiled.predictor.net
    assert isinstance(net, torch._dynamo.eval_frame.OptimizedModule)
    assert eager.settings == compiled.settings and eager.settings["num_crops"] == 4
    kwargs = compiled.predictor.net_kwargs  # aux=False, view_chunk=1 on the CPU
    photos = [synthetic_photo(240, 320, seed=1), synthetic_photo(300, 200, seed=2)]
    result = compare(
        partial(eager.predictor.net, **kwargs),
        partial(net, **kwargs),
        eager.predictor.fusion,
        eager.settings,
        photos,
    )
    print(f"compile=true vs eager: {result}")  # the figures, with pytest -s
    assert len(result["padded_sizes"]) == 2, result
    assert result["raw_relative_error"] <= RAW_TOLERANCE, result
    assert result["pixel_agreement"] >= PIXEL_AGREEMENT, result
    # the Segmenter path (views, compiled network, fusion) end to end
    from cropformer.evaluation.agreement import id_map_agreement

    want, got = eager(photos[0]).prediction["id_map"], compiled(photos[0]).prediction["id_map"]
    assert id_map_agreement(want, got).fraction >= PIXEL_AGREEMENT


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_eval_compile_matches_eager(checkpoint: Path, tmp_path: Path) -> None:
    """eval.py compile=true: the same AP^e and the same detections as eager."""
    from cropformer.cli.eval import evaluate

    data = tmp_path / "data"
    summaries = {}
    for compiled in (False, True):
        cfg = tiny_cfg(
            tmp_path,
            f"ckpt={checkpoint}",
            f"compile={str(compiled).lower()}",
            *TINY_DATA,
            name="eval",
            data_dir=data,
        )
        summaries[compiled] = evaluate(cfg)
    eager, compiled_run = summaries[False], summaries[True]
    assert compiled_run["entity_ap"] == pytest.approx(eager["entity_ap"], abs=0.5)
    detections = [json.loads(Path(s["results_json"]).read_text()) for s in (eager, compiled_run)]
    assert len(detections[0]) == len(detections[1]) > 0
    scores = [sorted(d["score"] for d in run) for run in detections]
    assert max(abs(a - b) for a, b in zip(*scores)) <= RAW_TOLERANCE
