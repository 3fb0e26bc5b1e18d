"""HorNet backbone: official parity (``../shared/reference/parity_hornet``), the feature contract,
the fp32 FFT path under autocast, activation checkpointing and drop path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.shared import require_shared

from cropformer.model.convert import convert_official_state_dict
from cropformer.model.hornet import GlobalLocalFilter, HorNet

LEVELS = ("res2", "res3", "res4", "res5")


def _small(**kwargs) -> HorNet:
    """A tiny HorNet with both kinds of depthwise conv (7x7 in stages 1-2, global filter 3-4)."""
    args = dict(
        base_dim=16,
        depths=(1, 1, 2, 1),
        orders=(2, 3, 4, 5),
        global_filter_sizes=(None, None, (6, 4), (3, 2)),
        drop_path_rate=0.0,
        layer_scale_init=0.5,  # visible block branches (1e-6 would hide them)
    )
    args.update(kwargs)
    return HorNet(**args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bundle(shared_dir: Path) -> dict:
    path = shared_dir / "reference" / "parity_hornet" / "hornet_small.pth"
    require_shared(path)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def official_net(bundle: dict) -> HorNet:
    cfg = bundle["config"]
    filters = cfg["global_filter_hw"]
    net = HorNet(
        base_dim=cfg["base_dim"],
        depths=cfg["depths"],
        orders=cfg["orders"],
        scale=cfg["s"],
        global_filter_sizes=(None, None, filters["stage3"], filters["stage4"]),
        drop_path_rate=cfg["drop_path_rate"],
    ).eval()
    # the released checkpoints' path: official keys (with the model's "backbone." prefix)
    # -> convert_official_state_dict -> our network's keys; then strip to the backbone
    official = {f"backbone.{k}": v for k, v in bundle["state_dict"].items()}
    converted, unmapped = convert_official_state_dict(official)
    assert unmapped == []
    assert len(converted) == len(official) == 162
    state = {k.removeprefix("backbone."): v for k, v in converted.items()}
    net.load_state_dict(state, strict=True)
    return net


@pytest.mark.parametrize("name", ["small", "large", "native"])
def test_outputs_equal_the_official_hornet(official_net: HorNet, bundle: dict, name: str) -> None:
    images = bundle["inputs"][name]
    with torch.no_grad():
        feats = official_net(images)
    assert len(feats) == 4
    for level, ours in zip(LEVELS, feats):
        ref = bundle["outputs"][name][level]
        assert ours.shape == ref.shape, (name, level)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5, msg=f"{name} {level}")


def test_feature_contract_on_odd_sizes() -> None:
    net = _small().eval()
    assert net.channels == [16, 32, 64, 128]
    assert net.strides == [4, 8, 16, 32]
    assert net.size_divisibility == 32
    images = torch.randn(1, 3, 65, 97)  # padded to 96 x 128 inside
    with torch.no_grad():
        feats = net(images)
        padded = net(torch.nn.functional.pad(images, (0, 31, 0, 31)))
    for feat, ref, c, s in zip(feats, padded, net.channels, net.strides):
        assert feat.shape == (1, c, 96 // s, 128 // s)
        assert torch.isfinite(feat).all()
        torch.testing.assert_close(feat, ref)  # zero padding bottom/right, as detectron2 pads


def test_global_filter_resizes_the_stored_filter() -> None:
    torch.manual_seed(1)
    layer = GlobalLocalFilter(8, h=6, w=4)  # native for 6 x 6 maps (rfft width 6 // 2 + 1 = 4)
    for size in ((6, 6), (5, 9), (12, 14)):
        out = layer(torch.randn(2, 8, *size))
        assert out.shape == (2, 8, *size) and torch.isfinite(out).all()


def test_global_filter_runs_the_fft_in_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(2)
    layer = GlobalLocalFilter(16, h=6, w=4)
    x = torch.randn(2, 16, 10, 12)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.bfloat16())
    # official: the global half is cast to fp32 and the halves concatenated -> fp32 output
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # channel 2i + 1 is the global half: only the bf16 input rounding (~2^-8) separates them
    torch.testing.assert_close(out[:, 1::2], ref[:, 1::2], rtol=0, atol=0.05)
    torch.testing.assert_close(out, ref, rtol=0, atol=0.1)

    net = _small().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = net(torch.randn(1, 3, 64, 64))
    assert all(torch.isfinite(f).all() for f in feats)


def test_activation_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(3)
    plain = _small(drop_path_rate=0.3).train()
    ckpt = _small(drop_path_rate=0.3, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    images = torch.randn(1, 3, 64, 64)
    grads = []
    outs = []
    for net in (plain, ckpt):
        torch.manual_seed(7)  # the same drop-path draws in both runs
        feats = net(images)
        sum(f.square().mean() for f in feats).backward()  # type: ignore[union-attr]
        outs.append([f.detach() for f in feats])
        grads.append({k: p.grad for k, p in net.named_parameters()})
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    assert grads[0].keys() == grads[1].keys()
    for key, g in grads[0].items():
        assert g is not None and grads[1][key] is not None, key
        torch.testing.assert_close(g, grads[1][key], msg=key)


def test_drop_path_is_a_no_op_in_eval() -> None:
    torch.manual_seed(4)
    dropped = _small(drop_path_rate=0.9).eval()
    kept = _small(drop_path_rate=0.0).eval()
    kept.load_state_dict(dropped.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(dropped(images), kept(images)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        dropped.train()  # and it does drop in training
        trained = dropped(images)
    assert any(not torch.allclose(a, b) for a, b in zip(trained, kept(images)))


def test_layer_scales_and_widths() -> None:
    net = _small(layer_scale_init=0.0)
    assert not any("gamma" in k for k in net.state_dict())
    net = _small(layer_scale_init=1e-6)
    block = net.stages[3][0]
    assert torch.equal(block.gamma1, torch.full((128,), 1e-6))
    gnconv = block.gnconv
    assert gnconv.dims == [8, 16, 32, 64, 128]  # order 5: C / 2^(4 - k)
    assert [tuple(p.weight.shape[:2]) for p in gnconv.pws] == [
        (16, 8),
        (32, 16),
        (64, 32),
        (128, 64),
    ]
    assert net.stages[0][0].gnconv.dwconv.weight.shape == (24, 1, 7, 7)  # 8 + 16 gate channels
    assert net.stages[2][0].gnconv.dwconv.complex_weight.shape == (60, 6, 4, 2)  # half of 120


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depths": (1, 1, 1)}, "4 stages"),
        ({"global_filter_sizes": (None, None, (6,), None)}, r"\[h, w\] or null"),
        ({"base_dim": 9}, "divisible by 2\\^\\(order-1\\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _small(**kwargs)


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        HorNet(16)  # type: ignore[misc]


def test_declared_channels_must_be_the_stage_widths() -> None:
    assert _small(channels=[16, 32, 64, 128]).channels == [16, 32, 64, 128]
    with pytest.raises(ValueError, match=r"base_dim=16.*\[16, 32, 64, 128\].*channels=\[192"):
        _small(channels=[192, 384, 768, 1536])
