"""collate: padding to a multiple of 32, image-major view order, targets at the padded size."""

from __future__ import annotations

import pytest
import torch

from cropformer.data.collate import collate, padded_size


def _sample(i, sizes, K=2):
    views = [
        torch.full((3, h, w), 10 * i + t + 1, dtype=torch.uint8) for t, (h, w) in enumerate(sizes)
    ]
    maps = []
    for h, w in sizes:
        lm = torch.full((h, w), -1, dtype=torch.int16)
        lm[: h // 2] = 0
        if K > 1:
            lm[h // 2 :, : w // 2] = 1
        maps.append(lm)
    return {
        "views": views,
        "boxes": torch.tensor([[0, 0, 100, 80]] * len(sizes), dtype=torch.float32),
        "orig_size": (80, 100),
        "image_id": 100 + i,
        "file_name": f"img{i}.jpg",
        "label_maps": maps,
        "num_entities": K,
    }


def test_collate_padding_order_and_targets():
    s0 = _sample(0, [(50, 70), (50, 69)])
    s1 = _sample(1, [(64, 40), (33, 97)])
    b = collate([s0, s1])
    assert b["images"].shape == (4, 3, 64, 128)
    # image-major order: img0-full, img0-crop, img1-full, img1-crop
    assert [int(b["images"][n, 0, 0, 0]) for n in range(4)] == [1, 2, 11, 12]
    assert b["view_sizes"].tolist() == [[50, 70], [50, 69], [64, 40], [33, 97]]
    assert int(b["images"][0, :, 50:, :].sum()) == 0 and int(b["images"][0, :, :, 70:].sum()) == 0
    assert b["boxes"].shape == (2, 2, 4) and b["orig_sizes"].tolist() == [[80, 100]] * 2
    assert b["image_ids"].tolist() == [100, 101] and b["file_names"] == ["img0.jpg", "img1.jpg"]
    t = b["targets"][1]
    assert t["masks"].shape == (2, 2, 64, 128) and t["masks"].dtype == torch.bool
    assert t["masks"][0, 1, :16, :97].all() and not t["masks"][0, 1, 16:].any()
    assert not t["masks"][:, 1, 33:, :].any() and not t["masks"][:, 1, :, 97:].any()
    assert t["valid"].all()


def test_collate_without_targets_and_divisibility():
    s = _sample(0, [(50, 70)])
    del s["label_maps"], s["num_entities"]
    b = collate([s], size_divisibility=1)
    assert "targets" not in b and b["images"].shape == (1, 3, 50, 70)
    assert padded_size([(1, 1)], 32) == (32, 32)


def test_collate_rejects_mixed_view_counts_and_empty():
    with pytest.raises(ValueError, match="same number of views"):
        collate([_sample(0, [(10, 10)]), _sample(1, [(10, 10), (10, 10)])])
    with pytest.raises(ValueError, match="no samples"):
        collate([])
