"""id_map_agreement: same partition = 1 whatever the labels; moved pixels counted once each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropformer.evaluation.agreement import id_map_agreement


def _map(seed: int = 0, h: int = 40, w: int = 60, n: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(-1, n, (h // 10, w // 10), generator=g, dtype=torch.int32)
    return coarse.repeat_interleave(10, 0).repeat_interleave(10, 1)


def test_relabelled_partition_agrees_fully():
    a = _map()
    perm = torch.tensor([5, 3, 0, 6, 1, 4, 2], dtype=torch.int32)  # ids k -> perm[k]
    b = torch.where(a >= 0, perm[a.clamp(min=0).long()], a)
    r = id_map_agreement(a, b)
    assert r.fraction == 1.0
    assert r.entities_a == r.entities_b == r.matched == int((torch.unique(a) >= 0).sum())
    assert r.pixels == a.numel()


def test_moved_pixels_count_once():
    a = _map()
    b = a.clone()
    b[0, :7] = torch.where(b[0, :7] == 2, 3, 2)  # 7 pixels change entity
    b[1, :3] = -1  # 3 pixels lose theirs (some may already be -1)
    lost = int((a[1, :3] >= 0).sum())
    r = id_map_agreement(a, b)
    assert r.fraction == pytest.approx(1.0 - (7 + lost) / a.numel())


def test_split_entity_matches_its_larger_part():
    a = torch.zeros(10, 10, dtype=torch.int32)  # one entity
    b = torch.zeros(10, 10, dtype=torch.int32)
    b[:, 7:] = 1  # split into 70 + 30 pixels
    r = id_map_agreement(a, b)
    assert r.fraction == pytest.approx(0.7)
    assert (r.entities_a, r.entities_b, r.matched) == (1, 2, 1)


def test_no_entity_agrees_only_with_no_entity_and_any_negative_counts():
    a = torch.full((4, 5), -1, dtype=torch.int32)
    b = torch.full((4, 5), -7, dtype=torch.int64)  # another negative code, numpy-like input
    assert id_map_agreement(a, b.numpy()).fraction == 1.0
    b[0] = 0
    assert id_map_agreement(a.numpy(), b).fraction == pytest.approx(15 / 20)


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match=r"\(H, W\) and of one shape"):
        id_map_agreement(np.zeros((3, 4)), np.zeros((4, 3)))
