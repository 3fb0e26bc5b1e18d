"""conf/inference: one name per test-time setting, applied the same way by the three commands."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cropformer.run.inference_settings import (
    apply_to_data,
    apply_to_model,
    fusion_settings,
    view_settings,
)
from cropformer.utils.errors import UserError


def _cfg(**inference):
    node = {
        "short_side": None,
        "max_size": None,
        "num_crops": None,
        "crop_ratio": None,
        "fusion": {"decoder": None, "double_sigmoid": None},
    }
    for key, value in inference.items():
        if key in ("decoder", "double_sigmoid"):
            node["fusion"][key] = value
        else:
            node[key] = value
    return OmegaConf.create(
        {
            "inference": node,
            "data": {
                "test_short_side": 320,
                "test_max_size": 512,
                "crop": {"num_test": 4, "ratio": 0.7},
            },
            "model": {
                "fusion": {"decoder": "B-OC", "double_sigmoid": True, "order": "entity_prob"}
            },
        }
    )


def test_nulls_keep_the_runs_own_settings():
    cfg = _cfg()
    before = OmegaConf.to_container(cfg)
    apply_to_data(cfg, training=True)
    apply_to_model(cfg)
    assert OmegaConf.to_container(cfg) == before
    assert fusion_settings(cfg) == {}
    assert set(view_settings(cfg)) == {"short_side", "max_size", "num_crops", "crop_ratio"}


def test_given_values_replace_the_data_views_and_the_model_fusion():
    cfg = _cfg(short_side=96, num_crops=0, decoder="B-O", double_sigmoid=False)
    apply_to_data(cfg, training=True)
    apply_to_model(cfg)
    assert cfg.data.test_short_side == 96 and cfg.data.crop.num_test == 0
    assert cfg.data.test_max_size == 512  # not given: unchanged
    assert cfg.model.fusion.decoder == "B-O" and cfg.model.fusion.double_sigmoid is False
    assert cfg.model.fusion.order == "entity_prob"


def test_crop_ratio_sets_the_eval_crops_but_is_an_error_in_training():
    cfg = _cfg(crop_ratio=0.5)
    apply_to_data(cfg, training=False)
    assert cfg.data.crop.ratio == 0.5
    with pytest.raises(UserError, match=r"inference.crop_ratio=0.5.*data.crop.ratio=0.5"):
        apply_to_data(_cfg(crop_ratio=0.5), training=True)


def test_predict_passes_the_views_and_fusion_by_the_same_names():
    cfg = _cfg(max_size=640, decoder="I-O")
    assert view_settings(cfg) == {
        "short_side": None,
        "max_size": 640,
        "num_crops": None,
        "crop_ratio": None,
    }
    assert fusion_settings(cfg) == {"decoder": "I-O"}


def test_a_non_mapping_node_is_one_readable_error():
    cfg = OmegaConf.create({"inference": {"fusion": 3}})
    with pytest.raises(UserError, match=r"inference.fusion=3: must be a mapping"):
        fusion_settings(cfg)


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("inference.num_crops=-1", "inference.num_crops=-1"),
        ("inference.short_side=0", "inference.short_side=0"),
        ("inference.crop_ratio=1.5", "inference.crop_ratio=1.5"),
        ("inference.fusion.decoder=X", "inference.fusion.decoder='X'"),
        ("inference.fusion.double_sigmoid=maybe", "inference.fusion.double_sigmoid='maybe'"),
    ],
)
def test_bad_values_are_one_line_errors_in_every_command(override, shown):
    from cropformer.cli.validate import command_line_error
    from cropformer.run.config import find_conf_dir

    commands = {"train": (), "eval": ("ckpt=x.ckpt",), "predict": ("ckpt=x", "input=x")}
    for name, extra in commands.items():
        message = command_line_error(name, [*extra, override], conf_dir=find_conf_dir())
        assert message is not None and shown in message, (name, message)


def test_class_aware_settings_reach_the_fusion_by_the_same_names():
    """task=panoptic selects conf/model/fusion/class_aware.yaml; inference.fusion.* replaces its
    values as for the entity fusion (train.py: what validation uses and the checkpoint stores)."""
    from hydra.utils import instantiate

    from cropformer.inference.class_fusion import ClassAwareFusion
    from cropformer.run.config import compose_config

    cfg = compose_config(
        [
            "task=panoptic",
            "model.fusion.overlap_threshold=0.6",
            "inference.fusion.object_mask_threshold=0.3",
            "inference.fusion.top_k=7",
            "inference.fusion.segment_pixels=argmax",
            "inference.fusion.decoder=B-O",
        ]
    )
    assert fusion_settings(cfg) == {
        "decoder": "B-O",
        "object_mask_threshold": 0.3,
        "top_k": 7,
        "segment_pixels": "argmax",
    }
    apply_to_model(cfg)
    fusion = instantiate(cfg.model.fusion)
    assert isinstance(fusion, ClassAwareFusion) and fusion.task == "panoptic"
    assert (fusion.object_mask_threshold, fusion.overlap_threshold, fusion.top_k) == (0.3, 0.6, 7)
    assert fusion.segment_pixels == "argmax" and fusion.decoder == "B-O"
    assert fusion.instance_score_threshold == 0.5 and fusion.overlap_strict is False  # defaults


def test_entity_fusion_config_is_unchanged_by_the_class_aware_options():
    from cropformer.run.config import compose_config

    cfg = compose_config([])
    fusion = OmegaConf.to_container(cfg.model.fusion, resolve=True)
    assert fusion["_target_"] == "cropformer.inference.fusion.MultiViewFusion"
    assert not {"task", "object_mask_threshold", "top_k"} & set(fusion)
    assert fusion_settings(cfg) == {}  # the class-aware overrides are null by default
    for task in ("instance", "semantic"):
        node = compose_config([f"task={task}"]).model.fusion
        assert node._target_.endswith("ClassAwareFusion") and node.task == task
        assert node.object_mask_threshold == 0.8 and node.top_k == 100  # the official values
