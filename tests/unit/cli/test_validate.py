"""Configuration checks before any work: unknown keys (with or without +) and bad values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cropformer.cli.validate import check_values, command_line_error
from cropformer.run.config import compose_config, find_conf_dir
from cropformer.run.config_keys import index_keys, suggest
from cropformer.utils.errors import UserError

CONF = find_conf_dir()


def _error(*overrides: str, name: str = "train", multirun: bool = False) -> str | None:
    return command_line_error(name, list(overrides), conf_dir=CONF, multirun=multirun)


@pytest.mark.parametrize("override", ["data.crop.ratoi=0.5", "+data.crop.ratoi=0.5"])
def test_misspelt_key_with_or_without_plus_suggests_the_right_one(override):
    # issue 17 case 2: `+data.crop.ratoi` ran with the key silently ignored
    message = _error(override)
    assert message is not None and "\n" not in message
    assert "`data.crop.ratoi`" in message and "did you mean `data.crop.ratio`?" in message


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("+trainer.max_stesp=3", "trainer.max_steps"),
        ("data.ratio=0.5", "data.crop.ratio"),
        ("+model.fusion.decodr=B-O", "model.fusion.decoder"),
    ],
)
def test_unknown_keys_anywhere_suggest_the_closest_known_key(override, hint):
    message = _error(override)
    assert message is not None and f"did you mean `{hint}`?" in message


def test_unknown_key_in_a_sweep_is_found_before_the_sweep_starts():
    message = _error("data.crop.ratio=0.5,0.6", "+data.crop.ratoi=0.3", multirun=True)
    assert message is not None and "data.crop.ratoi" in message


def test_eval_config_checks_its_own_keys():
    message = _error("ckpt=x.ckpt", "inference.fusion.decodr=B-O", name="eval")
    assert message is not None and "did you mean `inference.fusion.decoder`?" in message


def test_eval_merge_decoder_settings_are_checked():
    # the Mask2Former test-time multi-view control row (fusion decoder I-OC-merge)
    ok = ["ckpt=x.ckpt", "data/crop=fixed4", "inference.fusion.decoder=I-OC-merge"]
    good = [
        "inference.fusion.merge_threshold=0.6",
        "inference.fusion.merge_metric=ios",
        "inference.fusion.merge_canvas_size=256",
    ]
    assert _error(*ok, *good, name="eval") is None
    message = _error(*ok, "inference.fusion.merge_threshold=0", name="eval")
    assert message is not None and message.startswith("inference.fusion.merge_threshold=0: must be")
    message = _error(*ok, "inference.fusion.merge_canvas_size=-1", name="eval")
    assert message is not None and message.startswith(
        "inference.fusion.merge_canvas_size=-1: must be"
    )
    message = _error(*ok, "inference.fusion.merge_metric=giou", name="eval")
    assert message is not None and message.startswith(
        "inference.fusion.merge_metric='giou': not a merge"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.crop.ratio=0.5"],
        ["+trainer.profiler=simple"],  # a Trainer keyword that the YAML does not list
        ["+callbacks.seen_samples._target_=cropformer.training.seen_samples.SeenSamples"],
        ["+logger.csv.prefix=x"],
        ["tags=[a,b]", "hydra.run.dir=logs/x", "+hydra.job.env_set.FOO=1"],
        ["model=mask2former_tiny", "data/crop=none", "model.fusion.decoder=B-O"],
        ["data=coco_json", "data.num_workers=2"],
    ],
)
def test_known_and_open_keys_are_accepted(overrides):
    assert _error(*overrides, multirun=True) is None


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_key_an_experiment_preset_sets_is_accepted(preset):
    # presets add keys (e.g. model.init_checkpoint): setting them again on the command line works
    raw = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
    raw.pop("defaults", None)
    index = index_keys(raw)
    leaves = sorted(k for k in index.keys if not any(o.startswith(k + ".") for o in index.keys))
    overrides = [f"experiment={preset}"] + [f"{k}=0" for k in leaves if "_target_" not in k]
    assert len(overrides) > 1
    assert _error(*overrides, multirun=True) is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.crop.mode=fixd", "data.crop.mode='fixd'"),  # issue 17 case 3 (was 114 lines)
        ("data.crop.ratio=abc", "data.crop.ratio='abc'"),  # was a raw ValueError traceback
        ("data.crop.ratio=1.5", "data.crop.ratio=1.5"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.train_short_sides=[0]", "data.train_short_sides"),
        ("data.num_workers=-1", "data.num_workers=-1"),
        ("data.pin_memory=maybe", "data.pin_memory='maybe'"),
        ("trainer.precision=17", "trainer.precision=17"),
        ("trainer.max_steps=0", "trainer.max_steps=0"),
        ("trainer.val_check_interval=-3", "trainer.val_check_interval=-3"),
        ("model.fusion.decoder=X", "model.fusion.decoder='X'"),
        ("model.fusion.merge_threshold=1.5", "model.fusion.merge_threshold=1.5"),
        ("model.fusion.merge_canvas_size=0", "model.fusion.merge_canvas_size=0"),
        ("seed=abc", "seed='abc'"),
        # issue 27's trial: was a TypeError deep in torch's optimizer, exit 1
        ("model.optimizer.lr=abc", "model.optimizer.lr='abc'"),
        ("model.optimizer.lr=0", "model.optimizer.lr=0"),
        ("model.optimizer.weight_decay=-0.1", "model.optimizer.weight_decay=-0.1"),
        ("model.optimizer.backbone_lr_mult=nan", "model.optimizer.backbone_lr_mult=nan"),
    ],
)
def test_bad_values_are_one_line_naming_key_value_and_what_is_allowed(override, expected):
    message = _error(override)
    assert message is not None and "\n" not in message
    assert message.startswith(expected)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("output_format=demo", "output_format='demo'"),
        ("id_dtype=int8", "id_dtype='int8'"),
        ("output_layout=tree", "output_layout='tree'"),
        ("shard_by=folder", "shard_by='folder'"),
        ("score_threshold=50", "score_threshold=50"),
        ("score_threshold=high", "score_threshold='high'"),
        ("min_area=-1", "min_area=-1"),
        ("min_area=2.5", "min_area=2.5"),
        ("every=0", "every=0"),
        ("write.id_map_suffix=_ids.jpg", "write.id_map_suffix='_ids.jpg'"),
        ("write.rle_json=maybe", "write.rle_json='maybe'"),
    ],
)
def test_bad_predict_output_values_are_one_line(override, expected):
    message = _error("ckpt=x.ckpt", "input=frames/", override, name="predict")
    assert message is not None and "\n" not in message
    assert message.startswith(expected)


def test_predict_output_options_are_accepted():
    options = [
        "output_format=official_demo",
        "id_dtype=uint8",
        "output_layout=mirror",
        "shard_by=scene",
        "score_threshold=0.3",
        "min_area=400",
        "every=10",
        "write.id_map_suffix=.png",
        "write.rle_json=true",
    ]
    assert _error("ckpt=x.ckpt", "input=frames/", *options, name="predict") is None


@pytest.mark.parametrize("overrides", [["trainer=gpu"], ["trainer=ddp"]])
def test_gpu_trainer_without_a_gpu_is_one_line(overrides, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _error(*overrides)
    assert message is not None and "no GPU visible" in message and "trainer=cpu" in message


def test_gpu_experiment_preset_without_a_gpu_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _error("experiment=cropformer_swinl_entityseg_3x")
    assert message is not None and "trainer.accelerator=gpu" in message


def test_check_values_on_a_composed_config():
    cfg = compose_config(["paths.output_dir=."])
    check_values(cfg)  # the defaults are valid
    cfg.data.crop.mode = "fixd"
    with pytest.raises(UserError, match=r"data.crop.mode='fixd'.*fixed, fixed8, random, none"):
        check_values(cfg)


def test_suggest_prefers_siblings_and_gives_up_on_nonsense():
    index = index_keys(OmegaConf.create({"a": {"ratio": 1, "mode": 2}, "b": {"ratio": 3}}))
    assert suggest("a.ratoi", index) == "a.ratio"
    assert suggest("c.ratio", index) == "a.ratio"
    assert suggest("a.zzzzzz", index) is None


def test_keys_of_a_free_mapping_are_accepted():
    # predict.yaml declares `fusion: {}`: its keys are merged over the checkpoint's by the task
    index = index_keys(OmegaConf.create({"fusion": {}, "test": {"short_side": None}}))
    from cropformer.run.config_keys import is_known

    assert is_known("fusion.decoder", index, added=False)
    assert not is_known("test.short_sid", index, added=True)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["inference.fusion.object_mask_threshold=1.5"],
            "inference.fusion.object_mask_threshold=1.5: must be a number in [0.0, 1.0]",
        ),
        (["model.fusion.overlap_threshold=-0.1"], "model.fusion.overlap_threshold=-0.1: must"),
        (["inference.fusion.top_k=0"], "inference.fusion.top_k=0: must be an integer >= 1"),
        (["inference.fusion.instance_score_threshold=x"], "inference.fusion.instance_score_th"),
        (
            ["inference.fusion.segment_pixels=max"],
            "inference.fusion.segment_pixels='max': not a segment pixel rule; use one of "
            "official, argmax",
        ),
        (["inference.fusion.overlap_strict=maybe"], "inference.fusion.overlap_strict='maybe'"),
        (
            ["inference.fusion.double_sigmoid=false"],
            "inference.fusion.double_sigmoid: an entity-fusion setting",
        ),
        (
            ["inference.fusion.decoder=I-OC-merge"],
            "inference.fusion.decoder='I-OC-merge': the view merge is entity-only",
        ),
    ],
)
def test_bad_class_aware_fusion_values_are_one_line(overrides, expected):
    message = _error("task=panoptic", *overrides)
    assert message is not None and "\n" not in message
    assert message.startswith(expected)


def test_class_aware_fusion_settings_are_checked_in_every_command():
    good = [
        "inference.fusion.object_mask_threshold=0.5",
        "inference.fusion.overlap_threshold=0.0",
        "inference.fusion.top_k=50",
        "inference.fusion.instance_score_threshold=1",
        "inference.fusion.segment_pixels=argmax",
        "inference.fusion.overlap_strict=true",
    ]
    assert _error("task=instance", "model.fusion.top_k=10", *good) is None
    assert _error("ckpt=x.ckpt", *good, name="eval") is None
    assert _error("ckpt=x.ckpt", "input=x", *good, name="predict") is None
    message = _error("ckpt=x.ckpt", "inference.fusion.top_k=-1", name="eval")
    assert message is not None and message.startswith("inference.fusion.top_k=-1: must be")
    # an entity run: the class-aware settings would be ignored
    message = _error("inference.fusion.top_k=50")
    assert message is not None and message.startswith(
        "inference.fusion.top_k: a class-aware setting (task=instance|panoptic|semantic)"
    )
    message = _error("ckpt=x.ckpt", "input=x", "official_task=panoptik", name="predict")
    assert message is not None and message.startswith("official_task='panoptik'")


def test_class_aware_task_with_an_entity_fusion_is_one_line():
    message = _error("task=semantic", "model/fusion=fixed")
    assert message is not None and message.startswith(
        "task=semantic fuses with classes (model/fusion=class_aware"
    )
