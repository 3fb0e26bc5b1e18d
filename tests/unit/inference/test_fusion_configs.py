"""conf/model/fusion/{official,fixed}.yaml build the fusion with the documented flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cropformer.inference.fusion import MultiViewFusion

CONF = Path(__file__).resolve().parents[3] / "conf" / "model" / "fusion"


@pytest.mark.parametrize(
    ("name", "double", "order", "drop_empty"),
    [("official", True, "entity_prob", False), ("fixed", False, "score", True)],
)
def test_fusion_configs(name, double, order, drop_empty):
    fusion = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(fusion, MultiViewFusion)
    assert fusion.decoder == "B-OC" and fusion.mask_threshold == 0.5
    assert fusion.double_sigmoid is double
    assert fusion.order == order
    assert fusion.drop_empty is drop_empty


def test_official_config_equals_constructor_defaults():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "official.yaml"))
    cfg.pop("_target_")
    default = MultiViewFusion()
    for key, value in cfg.items():
        got = getattr(default, key)
        assert (str(got) if key.endswith("device") and got is not None else got) == value, key
