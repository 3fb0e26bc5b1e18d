"""An official detectron2 checkpoint, as published, through the Python API: the official result.

The parity bundle (``../shared/reference/parity``) holds an official CropFormer's
``model.state_dict()`` (a small Swin configuration), its resolved yaml, the input photo and the
official fused id map. ``load_segmenter(file, official_config=yaml)`` converts the weights in
memory, takes the views from the yaml (MIN_SIZE_TEST 256) and must reproduce the official id map,
scores and output order from the photo file alone. Not marked ``parity``: no peer library needed.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cropformer import load_segmenter
from cropformer.utils.errors import UserError


@pytest.fixture(scope="module")
def bundle(shared_dir):
    path = shared_dir / "reference" / "parity"
    final = torch.load(path / "eval_outputs.pth", weights_only=True)["final"]
    return path, final


@pytest.fixture(scope="module")
def official_pth(bundle):
    path, _ = bundle
    return load_segmenter(
        path / "official_state_dict.pth",
        official_config=path / "config_full.yaml",
        device="cpu",
    )


def test_official_file_reproduces_the_official_id_map(bundle, official_pth):
    path, final = bundle
    seg = official_pth
    assert seg.info.kind == "official"
    assert (seg.settings["short_side"], seg.settings["max_size"]) == (256, 1333)
    assert seg.settings["num_crops"] == 4 and seg.settings["crop_ratio"] == 0.7
    entities = seg(str(path / "images" / "img_a.png"))
    ref = final["pred_masks_id_map"].numpy().astype(np.int32)
    assert entities.id_map().shape == (420, 512)
    assert int((entities.id_map() - 1 != ref).sum()) == 0
    np.testing.assert_allclose(entities.scores, final["scores"].numpy(), atol=1e-6, rtol=0)
    assert torch.equal(entities.prediction["query_indices"], final["query_order"])
    assert "fusion B-OC" in seg.describe() and "256/1333" in seg.describe()


def test_pkl_with_numpy_arrays_gives_the_same_result(bundle, official_pth, tmp_path):
    path, _ = bundle
    state = torch.load(path / "official_state_dict.pth", weights_only=True)
    pkl = tmp_path / "model_final.pkl"
    with pkl.open("wb") as f:  # how detectron2 model-zoo pickles store weights
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "x"}, f)
    seg = load_segmenter(pkl, official_config=path / "config_full.yaml", device="cpu")
    image = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).open(path / "images" / "img_a.png")
    )
    a, b = seg(image), official_pth(image)
    assert np.array_equal(a.id_map(), b.id_map())


def test_official_file_of_unknown_size_needs_its_config(bundle):
    path, _ = bundle
    with pytest.raises(UserError, match="official_config="):
        load_segmenter(path / "official_state_dict.pth", device="cpu")


def test_init_checkpoint_accepts_an_official_file(bundle):
    import yaml

    from cropformer.model.convert import build_from_official_config, convert_official_state_dict
    from cropformer.training.module import load_init_weights

    path, _ = bundle
    net = build_from_official_config(yaml.safe_load((path / "config_full.yaml").read_text()))
    load_init_weights(net, str(path / "official_state_dict.pth"))
    ours, _ = convert_official_state_dict(
        torch.load(path / "official_state_dict.pth", weights_only=True)
    )
    own = net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ours.items())
