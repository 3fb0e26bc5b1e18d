"""init_checkpoint into a class-aware model: only a differing class head starts from scratch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cropformer.training.module import load_init_weights
from cropformer.utils.errors import UserError


class _Decoder(nn.Module):
    def __init__(self, classes: int, width: int = 8) -> None:
        super().__init__()
        self.class_head = nn.Linear(width, classes + 1)
        self.mask_head = nn.Linear(width, width)


class _Net(nn.Module):
    def __init__(self, classes: int, width: int = 8) -> None:
        super().__init__()
        self.decoder = _Decoder(classes, width)


def test_entity_weights_into_a_class_aware_model(tmp_path):
    entity = _Net(1)
    path = tmp_path / "entity.pt"
    torch.save(entity.state_dict(), path)
    panoptic = _Net(5)
    head_before = panoptic.decoder.class_head.weight.clone()
    load_init_weights(panoptic, str(path))
    assert torch.equal(panoptic.decoder.mask_head.weight, entity.decoder.mask_head.weight)
    assert torch.equal(panoptic.decoder.class_head.weight, head_before)  # from scratch
    with pytest.raises(UserError, match="shapes differ"):
        load_init_weights(_Net(5, width=4), str(path))  # not only the class head
