"""Parameter groups and the poly schedule follow the official solver (reference doc §5.1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cropformer.training.optim import build_adamw, build_param_groups, poly_lambda


class _Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(7, 3))
        self.qkv = nn.Linear(4, 12)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), _Attn())
        self.decoder = nn.ModuleDict(
            {
                "query_feat": nn.Embedding(5, 4),
                "norm": nn.LayerNorm(4),
                "proj": nn.Linear(4, 4),
                "gn": nn.GroupNorm(2, 4),
            }
        )
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _group_of(groups, name):
    return next(g for g in groups if name in g.names)


def test_groups_cover_every_trainable_parameter_once():
    model = _Toy()
    groups = build_param_groups(model, lr=1e-4, weight_decay=0.05)
    names = [n for g in groups for n in g.names]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable)
    assert len(names) == len(set(names))


def test_backbone_lr_and_no_decay_rules():
    groups = build_param_groups(model := _Toy(), lr=1e-4, weight_decay=0.05, backbone_lr_mult=0.1)
    assert model is not None
    conv = _group_of(groups, "backbone.0.weight")
    assert conv.lr == pytest.approx(1e-5) and conv.weight_decay == 0.05
    assert _group_of(groups, "backbone.1.weight").weight_decay == 0.0  # BatchNorm
    table = _group_of(groups, "backbone.2.relative_position_bias_table")
    assert table.weight_decay == 0.0 and table.lr == pytest.approx(1e-5)
    assert _group_of(groups, "decoder.query_feat.weight").weight_decay == 0.0
    assert _group_of(groups, "decoder.norm.bias").weight_decay == 0.0
    assert _group_of(groups, "decoder.gn.weight").weight_decay == 0.0
    head = _group_of(groups, "decoder.proj.weight")
    assert head.lr == pytest.approx(1e-4) and head.weight_decay == 0.05


def test_switches_turn_rules_off():
    groups = build_param_groups(
        _Toy(), lr=1e-4, weight_decay=0.05, no_decay_norm=False, no_decay_embedding=False
    )
    assert all(g.weight_decay == 0.05 for g in groups)


def test_adamw_groups_keep_lr_and_decay():
    groups = build_param_groups(_Toy(), lr=2e-4, weight_decay=0.05)
    opt = build_adamw(groups, lr=2e-4)
    assert {round(g["lr"], 8) for g in opt.param_groups} == {2e-4, 2e-5}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}


def test_poly_schedule_matches_official_formula():
    f = poly_lambda(max_steps=100, power=0.9)
    for step in (0, 1, 50, 99, 100, 150):
        expected = math.pow(1 - min(step, 100) / 100, 0.9)
        assert f(step) == pytest.approx(expected, abs=1e-12)


def test_poly_warmup_starts_at_factor_and_joins_poly():
    f = poly_lambda(max_steps=100, power=0.9, warmup_steps=10, warmup_factor=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(math.pow(0.9, 0.9))


def test_poly_rejects_bad_max_steps():
    with pytest.raises(ValueError, match="max_steps"):
        poly_lambda(max_steps=0)


def _tiny_module(*overrides: str):
    from types import SimpleNamespace

    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    cfg = compose_config(["model=cropformer_tiny", *overrides])
    module = instantiate(cfg.model, _recursive_=False)
    module._trainer = SimpleNamespace(max_steps=40)  # what configure_optimizers reads
    return module


def test_optimizer_and_schedule_come_from_the_config():
    module = _tiny_module("model.optimizer.weight_decay=0.01", "model.scheduler.warmup_steps=0")
    out = module.configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.01}
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(5e-4)  # cropformer_tiny
    assert sched.lr_lambdas[0](40) == 0.0 and sched.lr_lambdas[0](20) == pytest.approx(0.5**0.9)


@pytest.mark.parametrize("key", ["model.optimizer.lrr", "model.scheduler.powr"])
def test_misspelt_optimizer_or_scheduler_key_fails(key):
    from cropformer.utils.errors import UserError

    module = _tiny_module(f"+{key}=0.1")
    with pytest.raises(UserError, match=key.rsplit(".", 1)[0] + r".*" + key.rsplit(".", 1)[1]):
        module.configure_optimizers()


def test_checkpoint_configs_without_target_still_build():
    module = _tiny_module()
    legacy_opt = {k: v for k, v in module.hparams["optimizer"].items() if not k.startswith("_")}
    module.hparams["optimizer"] = legacy_opt
    module.hparams["scheduler"] = {"name": "poly", "power": 0.9, "max_steps": None}
    out = module.configure_optimizers()
    assert isinstance(out["optimizer"], torch.optim.AdamW)
    assert out["lr_scheduler"]["scheduler"].lr_lambdas[0](40) == 0.0


def test_hornet_norms_get_weight_decay_as_officially_unless_switched_off() -> None:
    # official: HorNet's LayerNorm is its own nn.Module class, not a torch norm class, so
    # detectron2's optimizer (which checks torch classes) gives its parameters weight decay
    from cropformer.model.hornet import HorNet

    net = nn.Module()
    net.backbone = HorNet(
        base_dim=8, depths=(1, 1, 1, 1), global_filter_sizes=(None, None, (4, 3), (2, 2))
    )
    net.norm = nn.LayerNorm(4)  # a torch norm outside HorNet: no weight decay either way
    hornet_norms = [
        "backbone.downsample_layers.0.1.weight",  # stem norm
        "backbone.stages.0.0.norm1.weight",
        "backbone.stages.0.0.norm2.bias",
        "backbone.stages.2.0.gnconv.dwconv.pre_norm.weight",
        "backbone.out_norms.3.weight",
    ]
    groups = build_param_groups(net, lr=1e-4, weight_decay=0.05)
    names = {n for g in groups for n in g.names}
    assert set(hornet_norms) <= names, sorted(names)[:20]
    for name in hornet_norms:
        assert _group_of(groups, name).weight_decay == 0.05, name
    assert _group_of(groups, "norm.weight").weight_decay == 0.0
    groups = build_param_groups(net, lr=1e-4, weight_decay=0.05, custom_norm_decay=False)
    for name in [*hornet_norms, "norm.weight"]:
        assert _group_of(groups, name).weight_decay == 0.0, name
