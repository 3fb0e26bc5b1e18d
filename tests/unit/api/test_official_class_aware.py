"""Official class-aware Mask2Former files (a class head over C + 1 outputs, e.g. COCO panoptic
Swin-T: 133 classes -> class_embed of 134 rows): read with their task and classes, checked
against the model / data / class set given, and converted by the script. The files are synthetic:
the official key names and shapes of ../shared/reference/official_keys/mask2former_swint.txt,
filled from our initialised network (no download), with a random 134-row class head."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.shared import require_shared
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cropformer.api import load_segmenter, read_checkpoint
from cropformer.model.convert import CLASS_HEAD_KEY, official_key_to_ours, official_num_classes
from cropformer.run.config import compose_config
from cropformer.utils.errors import UserError

REPO = Path(__file__).resolve().parents[3]
KEYS = REPO / ".." / "shared" / "reference" / "official_keys"
C = 133  # COCO panoptic: 80 things, 53 stuff
CLASSES = [{"id": k + 1, "name": f"class{k}", "isthing": int(k < 80)} for k in range(C)]
VIEWS = {"short_side": 64, "max_size": 96, "num_crops": 0}
KEEP_ALL = {"object_mask_threshold": 0.0, "overlap_threshold": 0.0}


def _official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    path = require_shared(KEYS / f"{name}.txt")
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            out[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return out


def official_file(path: Path, name: str, num_classes: int) -> tuple[Path, torch.Tensor]:
    """A detectron2-style ``{"model": ..., "iteration": ...}`` file of ``name``'s official keys
    with a class head of ``num_classes`` + 1 rows (values: our initialised network's)."""
    torch.manual_seed(0)
    net = instantiate(compose_config([f"model={name}"]).model.net)
    ours = net.state_dict()
    head = torch.randn(num_classes + 1, 256) * 0.1
    sd: dict[str, torch.Tensor] = {}
    for key, shape in _official_shapes(name).items():
        if key == CLASS_HEAD_KEY:
            sd[key] = head
        elif key.endswith("class_embed.bias"):
            sd[key] = torch.zeros(num_classes + 1)
        elif key.endswith("empty_weight"):  # the criterion's class weights: C + 1 too
            sd[key] = torch.ones(num_classes + 1)
        elif key.endswith("relative_position_index"):
            sd[key] = torch.zeros(shape, dtype=torch.long)
        else:
            mapped = official_key_to_ours(key)
            assert mapped is not None and tuple(ours[mapped].shape) == shape, key
            sd[key] = ours[mapped].clone()
    torch.save({"model": sd, "iteration": 368750}, path)
    return path, head


def head_only_file(path: Path, name: str, num_classes: int) -> Path:
    """The keys that say what a file is (backbone stem, queries, class head; CropFormer: one
    association key) at their official shapes: enough for every check made before the weights
    are loaded, in a file of kilobytes."""
    shapes = _official_shapes(name)
    keep = (
        "backbone.patch_embed.proj.weight",
        "sem_seg_head.predictor.query_feat.weight",
        "sem_seg_head.predictor.make_3d.enc_ffn_3d.0.norm.weight",
    )
    sd = {k: torch.zeros(shapes[k]) for k in keep if k in shapes}
    sd[CLASS_HEAD_KEY] = torch.zeros(num_classes + 1, 256)
    sd["sem_seg_head.predictor.class_embed.bias"] = torch.zeros(num_classes + 1)
    torch.save({"model": sd, "iteration": 1}, path)
    return path


@pytest.fixture(scope="module")
def head_only(tmp_path_factory) -> Path:
    return head_only_file(tmp_path_factory.mktemp("head") / "pan.pth", "mask2former_swint", C)


@pytest.fixture(scope="module")
def m2f_pan(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    return official_file(
        tmp_path_factory.mktemp("official") / "m2f_pan.pth", "mask2former_swint", C
    )


@pytest.fixture(scope="module")
def classes_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cats") / "panoptic_coco_categories.json"
    path.write_text(json.dumps(CLASSES))
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    line = str(err.value)
    assert "\n" not in line
    return line


def test_class_count_is_read_from_the_head(head_only):
    sd = torch.load(head_only, weights_only=True)
    assert official_num_classes(sd) == C and official_num_classes(sd["model"]) == C
    entity = _official_shapes("mask2former_swint")  # as released: the entity class head
    assert official_num_classes({k: torch.empty(s, device="meta") for k, s in entity.items()}) == 1
    with pytest.raises(UserError, match=r"has shape \(1, 256\): a class head has C \+ 1 >= 2"):
        official_num_classes({CLASS_HEAD_KEY: torch.zeros(1, 256)})


def test_a_class_aware_file_needs_its_task(head_only):
    with pytest.raises(UserError) as err:
        read_checkpoint(head_only)
    line = _one_line(err)
    assert f"official key '{CLASS_HEAD_KEY}' has shape (134, 256): 133 classes" in line
    assert "pass official_task=instance|panoptic|semantic" in line


def test_loads_with_its_task_and_classes_and_segments(m2f_pan, classes_json):
    path, head = m2f_pan
    loaded = read_checkpoint(path, official_task="panoptic")
    assert loaded.task == "panoptic" and loaded.classes is None
    assert loaded.net_config["decoder"]["num_classes"] == C
    assert loaded.criterion_config["num_classes"] == C
    assert loaded.fusion_config["_target_"].endswith("ClassAwareFusion")
    assert loaded.fusion_config["task"] == "panoptic"
    assert loaded.fusion_config["object_mask_threshold"] == 0.8  # the official test setting
    # inference needs the class set (names, thing / stuff): one line saying which option
    with pytest.raises(UserError, match=r"class-aware panoptic model without a class set: pass "):
        loaded.build()
    seg = load_segmenter(
        path,
        device="cpu",
        official_task="panoptic",
        official_classes=classes_json,
        fusion=KEEP_ALL,
        **VIEWS,
    )
    assert torch.equal(seg.predictor.net.decoder.class_head.weight, head)  # loaded as it is
    assert seg.task == "panoptic" and len(seg.classes) == C and seg.classes.num_things == 80
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    ent = seg(image)
    assert len(ent) > 0 and set(ent.category_ids.tolist()) <= set(range(1, C + 1))
    assert ent.category_names == [f"class{int(i) - 1}" for i in ent.category_ids]
    # a list works as well as a file
    again = read_checkpoint(path, official_task="panoptic", official_classes=CLASSES)
    assert again.classes == CLASSES


@pytest.mark.parametrize("name", ["mask2former_swint", "cropformer_swint"])
def test_instance_and_semantic_tasks_and_cropformer_files(tmp_path, name):
    """CropFormer has no released class-aware config; its files read the same way."""
    path = head_only_file(tmp_path / "f.pth", name, 80)
    for task in ("instance", "semantic"):
        loaded = read_checkpoint(path, official_task=task)
        assert loaded.task == task and loaded.fusion_config["task"] == task
        assert loaded.net_config["decoder"]["num_classes"] == 80
        assert (loaded.net_config["association"] is not None) == name.startswith("cropformer")


def test_disagreements_are_one_line_naming_key_shapes_and_override(head_only, tmp_path):
    path = head_only
    # a model config with another class count (load_segmenter(model=..., overrides))
    with pytest.raises(UserError) as err:
        read_checkpoint(
            path,
            official_task="panoptic",
            model="mask2former_swint",
            model_overrides=["model.net.decoder.num_classes=150"],
        )
    line = _one_line(err)
    assert f"official key '{CLASS_HEAD_KEY}' has shape (134, 256) (133 classes + no-object)" in line
    assert "gives (151, 256) (150 classes); pass model.net.decoder.num_classes=133" in line
    # predict.py / eval.py model=mask2former_swint: the composed entity model
    composed = compose_config(["model=mask2former_swint"]).model
    with pytest.raises(UserError, match=r"gives \(2, 256\) \(1 entity class\); pass model.net"):
        read_checkpoint(path, official_task="panoptic", model=composed)
    with pytest.raises(UserError, match=r"has 3 classes but official key .* predicts 133"):
        read_checkpoint(path, official_task="panoptic", official_classes=CLASSES[:3])
    with pytest.raises(UserError, match=r"^official_task='panoptik': use one of instance, pan"):
        read_checkpoint(path, official_task="panoptik")
    entity = head_only_file(tmp_path / "entity.pth", "mask2former_swint", 1)
    with pytest.raises(UserError, match=r"is an entity model .*\(2, 256\).*drop it"):
        read_checkpoint(entity, official_task="panoptic")


def test_eval_checks_the_data_class_count(head_only):
    from cropformer.cli.eval import _check_data_classes

    loaded = read_checkpoint(head_only, official_task="panoptic")
    _check_data_classes(loaded, OmegaConf.create({"data": {"num_classes": C}}))
    with pytest.raises(UserError) as err:
        _check_data_classes(loaded, OmegaConf.create({"data": {"num_classes": 150}}))
    line = _one_line(err)
    assert "(134, 256) (133 classes + no-object) but data.num_classes=150 gives (151, 256)" in line
    assert "evaluate on data with its 133 classes" in line


def test_official_config_gives_the_task_and_its_test_settings(head_only, tmp_path):
    """An official yaml: NUM_CLASSES checked against the head, the task from its TEST flags."""
    import yaml

    from cropformer.model.convert import official_class_settings

    cfg = {
        "MODEL": {
            "MASK_FORMER": {
                "TEST": {
                    "PANOPTIC_ON": True,
                    "INSTANCE_ON": True,
                    "SEMANTIC_ON": True,
                    "OBJECT_MASK_THRESHOLD": 0.7,
                    "OVERLAP_THRESHOLD": 0.75,
                }
            },
        },
        "TEST": {"DETECTIONS_PER_IMAGE": 50},
    }
    assert official_class_settings(cfg) == (
        "panoptic",
        {"object_mask_threshold": 0.7, "overlap_threshold": 0.75, "top_k": 50},
    )
    cfg["MODEL"]["MASK_FORMER"]["TEST"]["PANOPTIC_ON"] = False
    assert official_class_settings(cfg)[0] == "instance"
    assert official_class_settings({"MODEL": {}}) == (None, {})
    # a yaml of another class count is one line (the network is not built to find out)
    cfg["MODEL"]["SEM_SEG_HEAD"] = {"NUM_CLASSES": 150}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError) as err:
        read_checkpoint(head_only, official_config=path)
    line = _one_line(err)
    assert "(134, 256) (133 classes + no-object) but official config cfg.yaml (MODEL.SEM" in line
    assert line.endswith("pass the official config this file was trained with")


def _convert_cli():
    spec = importlib.util.spec_from_file_location(
        "convert_official_checkpoint", REPO / "scripts" / "convert_official_checkpoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_converter_checks_the_class_count_and_stores_task_and_classes(
    m2f_pan, head_only, classes_json, tmp_path, capsys
):
    main = _convert_cli()
    src, head = m2f_pan
    out = tmp_path / "pan.pt"
    assert main([str(src), str(out), "task=panoptic", "data=coco_panoptic"]) == 0
    assert "loaded with strict=True" in capsys.readouterr().out
    stored = torch.load(out, weights_only=False)
    assert stored["task"] == "panoptic" and stored["net_config"]["decoder"]["num_classes"] == C
    assert stored["fusion_config"]["_target_"].endswith("ClassAwareFusion")
    loaded = read_checkpoint(out, official_classes=classes_json)
    assert loaded.task == "panoptic" and len(loaded.classes) == C
    assert torch.equal(loaded.state["decoder.class_head.weight"], head)
    # the data of another class count: one line naming key, shapes and the override
    small = str(head_only)  # the class head is checked before the weights are loaded
    assert main([small, str(tmp_path / "x.pt"), "task=panoptic", "data=ade20k_panoptic"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    assert f"'{CLASS_HEAD_KEY}' has shape (134, 256) (133 classes + no-object) but" in err
    assert "gives (151, 256) (150 classes); pass task=<its task> with data=<its dataset>" in err
    # no task: the class count alone does not say which post-processing
    assert main([small, str(tmp_path / "y.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert "(133 classes + no-object) but model=mask2former_swint" in err
    assert "gives (2, 256) (1 entity class); pass task=<its task>" in err
    # a class count forced without a task: still not an entity model
    assert main([small, str(tmp_path / "z.pt"), "model.net.decoder.num_classes=133"]) == 1
    err = capsys.readouterr().err.strip()
    assert "class-aware (133 classes + no-object): pass task=instance|panoptic|semantic" in err
    # task only: C from the head; --classes stored with the file
    out = tmp_path / "inst.pt"
    assert main([str(src), str(out), "task=instance", "--classes", str(classes_json)]) == 0
    loaded = read_checkpoint(out)
    assert loaded.task == "instance" and loaded.classes == CLASSES


def test_other_window_size_is_one_line_naming_the_tensor(tmp_path, classes_json):
    """The COCO / ADE20K Swin recipes use window 12; the keys give no window, the guess builds 7:
    the first tensor whose shape differs is named, with the option that gives the architecture."""
    path = head_only_file(tmp_path / "w12.pth", "mask2former_swint", C)
    sd = torch.load(path, weights_only=True)
    table = "backbone.layers.0.blocks.0.attn.relative_position_bias_table"
    sd["model"][table] = torch.zeros(529, 3)  # (2 x 12 - 1)^2 rows: window 12
    torch.save(sd, path)
    loaded = read_checkpoint(path, official_task="panoptic", official_classes=classes_json)
    with pytest.raises(UserError) as err:
        loaded.build()
    line = _one_line(err)
    assert "blocks.0.attn.relative_position_bias_table (529, 3) in the file, (169, 3) built" in line
    assert line.endswith("pass the right model=... or official_config=<the official yaml>")
