"""Official checkpoint conversion: every official key of the released architectures maps onto
our configured networks with the same shape (key lists from ../shared/reference/official_keys)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers.shared import require_shared

from cropformer.model.convert import (
    build_from_official_config,
    convert_official_state_dict,
    detect_official_architecture,
    is_official_state_dict,
    official_key_to_ours,
    official_num_queries,
    parse_official_gconv,
)
from cropformer.utils.errors import UserError

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
KEYS = SHARED / "reference" / "official_keys"
PARITY = SHARED / "reference" / "parity"
REPO = Path(__file__).resolve().parents[3]


def _official_keys(name: str) -> dict[str, tuple[int, ...]]:
    path = KEYS / f"{name}.txt"
    require_shared(path)
    keys = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        keys[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return keys


@pytest.mark.parametrize(
    "name",
    [
        "cropformer_r50",
        "cropformer_swint",
        "cropformer_swinl",
        "cropformer_hornetl",
        "mask2former_r50",
        "mask2former_swint",
        "mask2former_swinl",
        "mask2former_hornetl",
    ],
)
def test_official_keys_map_onto_our_model(name: str) -> None:
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    if name == "mask2former_hornetl":
        # no key list of its own: the CropFormer HorNet-L keys less the association module
        official = {
            k: v for k, v in _official_keys("cropformer_hornetl").items() if ".make_3d." not in k
        }
    else:
        official = _official_keys(name)
    cfg = compose_config([f"model={name}"])
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    fake = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    converted, unmapped = convert_official_state_dict(fake)
    assert unmapped == []
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours


ALL_OFFICIAL = (
    "cropformer_hornetl",
    "cropformer_r50",
    "cropformer_swinl",
    "cropformer_swint",
    "mask2former_r50",
    "mask2former_swinl",
    "mask2former_swint",
)


def _fake_official(name: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in _official_keys(name).items()}


@pytest.mark.parametrize("name", ALL_OFFICIAL)
def test_official_architecture_is_detected_from_the_keys(name: str) -> None:
    sd = _fake_official(name)
    assert is_official_state_dict(sd) and is_official_state_dict({"model": sd, "iteration": 5})
    assert detect_official_architecture(sd) == name
    assert detect_official_architecture({"model": sd}) == name
    assert official_num_queries(sd) == (200 if "hornet" in name else 100)


def test_our_checkpoints_are_not_official() -> None:
    ours = {
        "net.backbone.body.conv1.weight": torch.zeros(1),
        "net.decoder.query_feat.weight": torch.zeros(2, 4),
    }
    assert not is_official_state_dict(ours)
    assert not is_official_state_dict({"backbone.body.conv1.weight": torch.zeros(1)})
    assert not is_official_state_dict({})
    with pytest.raises(UserError, match="not an official detectron2.*net.backbone.body"):
        detect_official_architecture(ours)
    assert official_num_queries({"sem_seg_head.pixel_decoder.x": torch.zeros(1)}) is None


def test_unknown_official_backbones_raise_a_clear_error() -> None:
    head = {"sem_seg_head.predictor.query_feat.weight": torch.zeros(100, 256)}
    swin_b = {**head, "backbone.patch_embed.proj.weight": torch.zeros(128, 3, 4, 4)}
    with pytest.raises(UserError, match="width 128, not a released Swin size.*model="):
        detect_official_architecture(swin_b)
    hornet_b = {**head, "backbone.downsample_layers.0.0.weight": torch.zeros(128, 3, 4, 4)}
    with pytest.raises(UserError, match="width 128, not a released HorNet size"):
        detect_official_architecture(hornet_b)
    r101 = {**head, "backbone.stem.conv1.weight": torch.zeros(64, 3, 7, 7)}
    r101["backbone.res4.22.conv1.weight"] = torch.zeros(1)
    r101["backbone.res4.6.conv1.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match="deeper than ResNet-50"):
        detect_official_architecture(r101)
    with pytest.raises(UserError, match="cannot tell the backbone"):
        detect_official_architecture(head)


def test_hornet_keys_map_one_to_one() -> None:
    official = _official_keys("cropformer_hornetl")
    backbone = [k for k in official if k.startswith("backbone.")]
    assert len(backbone) == 644
    ours = [official_key_to_ours(k) for k in backbone]
    assert len(set(ours)) == 644
    assert official_key_to_ours("backbone.stages.2.0.gnconv.dwconv.complex_weight") == (
        "backbone.stages.2.0.gnconv.dwconv.complex_weight"
    )
    assert official_key_to_ours("backbone.norm3.bias") == "backbone.out_norms.3.bias"


def test_build_from_official_hornet_config() -> None:
    import yaml

    path = PARITY / "config_full.yaml"
    require_shared(path)
    cfg = yaml.safe_load(path.read_text())
    cfg["MODEL"]["BACKBONE"]["NAME"] = "D2HorNet"  # its MODEL.HORNET block is the official one
    with torch.device("meta"):
        net = build_from_official_config(cfg)
    official = {
        k: v for k, v in _official_keys("cropformer_hornetl").items() if k.startswith("backbone.")
    }
    converted, unmapped = convert_official_state_dict(
        {k: torch.empty(s, device="meta") for k, s in official.items()}
    )
    assert unmapped == []
    ours = {f"backbone.{k}": tuple(v.shape) for k, v in net.backbone.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert net.backbone.channels == [192, 384, 768, 1536]  # type: ignore[union-attr]
    assert net.num_queries == 20 and net.association is not None  # the bundle config's decoder
    # a reduced HorNet: official defaults fill what the block leaves out
    cfg["MODEL"]["HORNET"] = {"BASE_DIM": 32, "DEPTHS": [1, 1, 1, 1]}
    with torch.device("meta"):
        small = build_from_official_config(cfg)
    assert small.backbone.channels == [32, 64, 128, 256]  # type: ignore[union-attr]
    assert small.backbone.stages[3][0].gnconv.dwconv.complex_weight.shape == (248, 12, 7, 2)


def test_official_gconv_strings_are_parsed_without_eval() -> None:
    assert parse_official_gconv("partial(gnconv, order=2, s=1/3)") == (2, 1 / 3, None)
    assert parse_official_gconv(
        "partial(gnconv, order=4, s=1/3, h=24, w=13, gflayer=GlobalLocalFilter)"
    ) == (4, 1 / 3, (24, 13))
    assert parse_official_gconv("partial(gnconv, gflayer=GlobalLocalFilter)") == (5, 1.0, (14, 8))
    assert parse_official_gconv("partial(gnconv,order=3,s=0.5)") == (3, 0.5, None)
    with pytest.raises(ValueError, match="is not of the form"):
        parse_official_gconv("__import__('os').system('true')")
    with pytest.raises(ValueError, match="unsupported argument"):
        parse_official_gconv("partial(gnconv, order=3, kernel=9)")
    with pytest.raises(ValueError, match="unsupported argument"):
        parse_official_gconv("partial(gnconv, order=3, gflayer=OtherFilter)")


def test_unknown_keys_are_reported() -> None:
    sd = {
        "sem_seg_head.predictor.query_feat.weight": torch.zeros(2, 4),
        "backbone.absolute_pos_embed": torch.zeros(1),
        "criterion_2d.empty_weight": torch.ones(2),
        "backbone.layers.0.blocks.0.attn.relative_position_index": torch.zeros(49, 49),
    }
    converted, unmapped = convert_official_state_dict({"model": sd})
    assert list(converted) == ["decoder.query_feat.weight"]
    assert unmapped == ["backbone.absolute_pos_embed"]
    assert official_key_to_ours("backbone.layers.2.downsample.norm.weight") == (
        "backbone.body.model.layers.3.downsample.norm.weight"
    )
    assert official_key_to_ours("backbone.res5.2.conv3.norm.running_var") == (
        "backbone.body.layer4.2.bn3.running_var"
    )


def _cli():
    spec = importlib.util.spec_from_file_location(
        "convert_official_checkpoint", REPO / "scripts" / "convert_official_checkpoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_converts_the_bundle(tmp_path, capsys) -> None:
    src = PARITY / "official_state_dict.pth"
    require_shared(src)
    out = tmp_path / "ours.pt"
    code = _cli()([str(src), str(out), "--official-config", str(PARITY / "config_full.yaml")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "unmapped: 0" in captured.out
    state = torch.load(out, weights_only=True)
    assert "decoder.query_pos.weight" in state["state_dict"]


def test_cli_reports_missing_input(tmp_path, capsys) -> None:
    code = _cli()([str(tmp_path / "missing.pth"), str(tmp_path / "out.pt")])
    assert code == 2
    assert "missing.pth" in capsys.readouterr().err


def test_cli_guesses_the_model_and_fails_strictly_on_missing_keys(tmp_path, capsys) -> None:
    # a Mask2Former R50 checkpoint with one decoder tensor missing: guessed, then strict failure
    official = _official_keys("mask2former_r50")
    sd = {k: torch.zeros(shape) for k, shape in official.items() if "predictor" in k}
    del sd["sem_seg_head.predictor.class_embed.bias"]
    src = tmp_path / "partial.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(64, 3, 7, 7), **sd}}, src)
    code = _cli()([str(src), str(tmp_path / "out.pt")])
    captured = capsys.readouterr()
    assert code == 1
    assert "guessed" in captured.out and "mask2former_r50" in captured.out
    assert "decoder.class_head.bias" in captured.err


def test_cli_initialises_the_association_from_a_mask2former_checkpoint(tmp_path, capsys) -> None:
    src = PARITY / "official_state_dict.pth"
    require_shared(src)
    sd = torch.load(src, weights_only=True)
    m2f = {k: v for k, v in sd.items() if ".make_3d." not in k}
    path = tmp_path / "m2f.pth"
    torch.save(m2f, path)
    cfg = ["--official-config", str(PARITY / "config_full.yaml")]
    assert _cli()([str(path), str(tmp_path / "a.pt"), *cfg]) == 1
    assert "association.cross_attn_layers.0.attn.in_proj_weight" in capsys.readouterr().err
    out = tmp_path / "b.pt"
    assert _cli()([str(path), str(out), *cfg, "--init-association"]) == 0
    state = torch.load(out, weights_only=True)["state_dict"]
    weight = state["association.ffn_layers.0.linear1.weight"]
    assert weight.shape == (256, 64) and weight.abs().sum() > 0 and weight.device.type == "cpu"
