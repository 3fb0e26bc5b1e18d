"""EntityPredictor: any image size/aspect in, EntityPrediction at original resolution out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cropformer.inference.fusion import MultiViewFusion
from cropformer.inference.predictor import EntityPredictor, as_rgb_uint8


class FakeNet(nn.Module):
    """Outputs-shaped predictions: query q is 'bright' where the view's red channel > 128 and q
    is even; batch-level pass present unless ``mask2former``."""

    def __init__(self, num_queries: int = 6, mask2former: bool = False) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.mask2former = mask2former
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple] = []

    def forward(self, images, num_views=1, view_sizes=None):
        N, _, H, W = images.shape
        self.calls.append((tuple(images.shape), num_views, view_sizes.clone()))
        Q = self.num_queries
        red = images[:, 0].float()[:, None, ::4, ::4]  # (N, 1, H/4, W/4)
        sign = torch.tensor([1.0 if q % 2 == 0 else -1.0 for q in range(Q)]).view(1, Q, 1, 1)
        masks = self.scale * sign * (red - 128.0) / 16.0  # (N, Q, h, w)
        logits = torch.stack([torch.linspace(2, -1, Q), torch.zeros(Q)], -1).expand(N, Q, 2)
        out = {"image_level": {"pred_logits": logits, "pred_masks": masks, "aux_outputs": []}}
        if not self.mask2former:
            B = N // num_views
            bm = masks.view(B, num_views, Q, *masks.shape[-2:]).transpose(1, 2)
            out["batch_level"] = {
                "pred_logits": logits.view(B, num_views, Q, 2)[:, 0],
                "pred_masks": bm,
                "aux_outputs": [],
            }
        return out


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 100, size=(h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 3 : (2 * w) // 3, 0] = 250  # one bright-red rectangle
    return img


def _predictor(**kw) -> EntityPredictor:
    kw.setdefault("short_side", 64)
    kw.setdefault("max_size", 128)
    return EntityPredictor(FakeNet(), MultiViewFusion(), **kw)


@pytest.mark.parametrize(("h", "w"), [(120, 90), (20, 30), (9, 7), (40, 600), (1, 1)])
def test_any_size_gives_original_resolution(h, w):
    pred = _predictor().predict(_image(h, w))
    assert pred["id_map"].shape == (h, w)
    assert pred["id_map"].dtype == torch.int32
    assert pred["scores"].shape == pred["query_indices"].shape == (6,)


def test_views_and_forward_shapes():
    p = _predictor(num_crops=4)
    p.predict(_image(120, 90))
    shape, T, view_sizes = p.net.calls[-1]
    assert T == 5 and shape[0] == 5 and shape[2] % 32 == 0 and shape[3] % 32 == 0
    assert view_sizes.shape == (5, 2) and int(view_sizes[0].min()) == 64
    p0 = _predictor(num_crops=0)
    p0.predict(_image(120, 90))
    assert p0.net.calls[-1][1] == 1


def test_red_rectangle_is_found_where_it_is():
    img = _image(160, 200)
    pred = _predictor().predict(img)
    # query 0 (most probable) is bright on red, query 1 on everything else
    k0 = pred["query_indices"].tolist().index(0)
    k1 = pred["query_indices"].tolist().index(1)
    assert (pred["id_map"][42:78, 70:130] == k0).all()
    assert (pred["id_map"][100:, :] == k1).all()


def test_predict_batch_equals_single_predictions():
    p = _predictor()
    imgs = [_image(120, 90, 1), _image(70, 140, 2)]
    batch = p.predict_batch(imgs)
    for img, pb in zip(imgs, batch):
        ps = p.predict(img)
        assert pb["id_map"].shape == img.shape[:2]
        # images of different sizes run apart (a shared padding would change them): equal
        assert torch.equal(pb["id_map"], ps["id_map"])
        assert torch.equal(pb["scores"], ps["scores"])
    same = [_image(120, 90, s) for s in (3, 4, 5)]
    p.net.calls.clear()
    together = p.predict_batch(same)
    assert len(p.net.calls) == 1 and p.net.calls[0][0][0] == 15  # one forward, 3 x 5 views
    for img, pb in zip(same, together):
        assert torch.equal(pb["id_map"], p.predict(img)["id_map"])
    assert p.predict_batch([]) == []
    # a 1-pixel-high image gets fewer crops: grouped into its own forward pass
    mixed = p.predict_batch([_image(60, 50), np.zeros((1, 5, 3), np.uint8), _image(40, 30)])
    assert [tuple(m["id_map"].shape) for m in mixed] == [(60, 50), (1, 5), (40, 30)]


def test_panorama_fuses_at_original_resolution_with_bounded_chunks():
    fusion = MultiViewFusion(chunk_memory_mb=8)
    p = EntityPredictor(FakeNet(), fusion, short_side=32, max_size=256)
    pred = p.predict(_image(120, 3000))
    assert pred["id_map"].shape == (120, 3000)


def test_mask2former_mode_and_bf16():
    p = EntityPredictor(
        FakeNet(mask2former=True),
        MultiViewFusion(),
        short_side=64,
        max_size=128,
        num_crops=0,
        precision="bf16",
    )
    pred = p.predict(_image(64, 80))
    assert pred["id_map"].shape == (64, 80)
    assert pred["scores"].dtype == torch.float32


def test_input_conversion():
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    assert as_rgb_uint8(rgba).shape == (5, 6, 3)
    assert as_rgb_uint8(np.zeros((5, 6), dtype=np.uint8)).shape == (5, 6, 3)
    f = as_rgb_uint8(np.full((2, 2, 3), 1.0, dtype=np.float32))
    assert f.dtype == np.uint8 and f.max() == 255
    with pytest.raises(ValueError, match="image array"):
        as_rgb_uint8(np.zeros((3, 5, 6)))
    with pytest.raises(ValueError, match="no pixels"):
        as_rgb_uint8(np.zeros((0, 5, 3), dtype=np.uint8))
    assert _predictor().predict(rgba.repeat(8, 0).repeat(8, 1))["id_map"].shape == (40, 48)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"short_side": 0}, "short_side"),
        ({"short_side": 200, "max_size": 100}, "short_side"),
        ({"num_crops": -1}, "num_crops"),
        ({"crop_ratio": 1.5}, "crop_ratio"),
        ({"precision": "64"}, "precision"),
        ({"view_chunk": 0}, "view_chunk"),
        ({"view_chunk": "some"}, "view_chunk"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EntityPredictor(FakeNet(), MultiViewFusion(), **kwargs)


@pytest.fixture(scope="module")
def tiny_nets():
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    torch.manual_seed(0)
    return {
        name: instantiate(compose_config([f"model={name}", "paths.output_dir=."]).model.net)
        for name in ("cropformer_tiny", "mask2former_tiny")
    }


@pytest.mark.slow  # builds two timm-backed networks (~3 s)
@pytest.mark.parametrize(("h", "w"), [(90, 150), (20, 30), (60, 1500)])
def test_real_tiny_models_any_size(tiny_nets, h, w):
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    p = EntityPredictor(
        tiny_nets["cropformer_tiny"], MultiViewFusion(), short_side=64, max_size=128
    )
    pred = p.predict(img)
    assert pred["id_map"].shape == (h, w)
    assert pred["scores"].numel() == tiny_nets["cropformer_tiny"].num_queries
    m2f = EntityPredictor(
        tiny_nets["mask2former_tiny"], MultiViewFusion(), short_side=64, max_size=128, num_crops=0
    )
    assert m2f.predict(img)["id_map"].shape == (h, w)


def test_view_chunk_and_no_aux_give_the_same_prediction(tiny_nets):
    """The memory options of a CropFormer predictor (aux off, 1 view at a time) change nothing."""
    img = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    net = tiny_nets["cropformer_tiny"]
    lean = EntityPredictor(net, MultiViewFusion(), short_side=32, max_size=64)
    assert lean.net_kwargs == {"aux": False, "view_chunk": 1}
    full = EntityPredictor(net, MultiViewFusion(), short_side=32, max_size=64, view_chunk=None)
    a, b = lean.predict(img), full.predict(img)
    assert torch.equal(a["query_indices"], b["query_indices"])
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
    assert (a["id_map"] != b["id_map"]).float().mean() < 1e-3


@pytest.mark.parametrize(
    "name",
    # the CropFormer case runs 3 x 3 views through a real network (~10-30 s on 2 shared cores)
    [pytest.param("cropformer_tiny", marks=pytest.mark.slow), "mask2former_tiny"],
)
def test_a_batch_of_frames_gives_the_ids_of_one_frame_at_a_time(tiny_nets, name):
    """``Segmenter.id_map`` over frames of one camera: one forward for the batch, same ids."""
    from cropformer.api import CheckpointInfo, Segmenter

    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    crops = 0 if name.startswith("mask2former") else 2
    p = EntityPredictor(
        tiny_nets[name], MultiViewFusion(), short_side=32, max_size=48, num_crops=crops
    )
    info = CheckpointInfo(path=Path(name), kind="test", model=name, step=None, stored_views={})
    mode = {"format": "official_demo", "score_threshold": 0.0}
    seg = Segmenter(p, info, {}, output_mode=mode)
    assert seg.output_mode.format == "official_demo"
    calls = []
    handle = p.net.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        batch = seg.id_map(frames, images_per_batch=3)
        assert calls == [3 * (1 + crops)]  # the three frames in one forward pass
        one_by_one = [seg.id_map(f) for f in frames]
    finally:
        handle.remove()
    assert all(m.dtype == np.uint16 and m.shape == (48, 64) for m in batch)
    assert int(batch[0].max()) > 1  # several entities, so the comparison means something
    for a, b in zip(batch, one_by_one):
        assert np.array_equal(a, b)
