"""TimmBackbone: channels/strides, padding, frozen parts, official Swin windows, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from model_builders import tiny_swin

from cropformer.model.backbone import TimmBackbone, _swin_block_official


@pytest.mark.parametrize(
    ("name", "indices", "kwargs"),
    [
        ("regnetx_002", (1, 2, 3, 4), {}),
        ("resnet18", (1, 2, 3, 4), {}),
        ("swin_tiny_patch4_window7_224", (0, 1, 2, 3), {"embed_dim": 8, "depths": (1, 1, 1, 1)}),
    ],
)
def test_channels_and_strides_follow_timm_feature_info(name, indices, kwargs) -> None:
    backbone = TimmBackbone(model_name=name, out_indices=indices, model_kwargs=kwargs)
    extra = {"feature_cls": "getter", "strict_img_size": False} if name.startswith("swin") else {}
    ref = timm.create_model(name, features_only=True, out_indices=indices, **kwargs, **extra)
    assert backbone.channels == ref.feature_info.channels()
    assert backbone.strides == ref.feature_info.reduction() == [4, 8, 16, 32]
    feats = backbone(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == backbone.channels
    assert [(f.shape[2], f.shape[3]) for f in feats] == [
        (64 // s, 96 // s) for s in backbone.strides
    ]


@pytest.mark.parametrize("name", ["regnetx_002", "swin_tiny_patch4_window7_224"])
def test_odd_input_sizes_are_padded(name) -> None:
    kwargs = {"embed_dim": 8, "depths": (1, 1, 1, 1)} if name.startswith("swin") else {}
    indices = (0, 1, 2, 3) if name.startswith("swin") else (1, 2, 3, 4)
    backbone = TimmBackbone(model_name=name, out_indices=indices, model_kwargs=kwargs).eval()
    x = torch.randn(1, 3, 97, 131)
    feats = backbone(x)
    # padded to 128 x 160
    assert [tuple(f.shape[-2:]) for f in feats] == [(128 // s, 160 // s) for s in (4, 8, 16, 32)]
    padded = torch.nn.functional.pad(x, (0, 160 - 131, 0, 128 - 97))
    for a, b in zip(feats, backbone(padded)):
        torch.testing.assert_close(a, b)


def test_official_swin_windows_equal_timm_when_maps_are_window_multiples() -> None:
    # With every map a multiple of the window (224 -> 56, 28, 14, 7) timm's own forward and the
    # official padding order must agree; they differ only on other sizes.
    torch.manual_seed(0)
    official = TimmBackbone(
        model_name="swin_tiny_patch4_window7_224",
        model_kwargs={"embed_dim": 8, "depths": (2, 2, 2, 2), "num_heads": (1, 1, 2, 2)},
    ).eval()
    timm_body = official.body
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = official(x)
        theirs = list(timm_body(x))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        odd = official(torch.randn(1, 3, 256, 320))
    assert [tuple(f.shape[-2:]) for f in odd] == [(64, 80), (32, 40), (16, 20), (8, 10)]


def test_swin_block_keeps_window_and_shift_on_small_maps() -> None:
    backbone = tiny_swin()
    block = backbone.body.model.layers[3].blocks[1]
    assert tuple(block.window_size) == (7, 7)
    y = _swin_block_official(block, torch.randn(2, 5, 8, 64))  # map smaller than a window
    assert y.shape == (2, 5, 8, 64)


def test_frozen_bn_makes_statistics_buffers() -> None:
    backbone = TimmBackbone(model_name="resnet18", out_indices=(1, 2, 3, 4), frozen_bn=True)
    names = {n for n, _ in backbone.named_parameters()}
    assert not any("bn" in n for n in names)
    assert any(n.endswith("bn1.running_var") for n, _ in backbone.named_buffers())
    assert sum(p.numel() for p in backbone.parameters()) == sum(
        m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)
    )


def test_frozen_stages_freeze_stem_and_first_stages() -> None:
    backbone = TimmBackbone(model_name="resnet18", out_indices=(1, 2, 3, 4), frozen_stages=1)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert "body.conv1.weight" in frozen
    assert any(n.startswith("body.layer1.") for n in frozen)
    assert not any(n.startswith("body.layer2.") for n in frozen)


def test_grad_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    plain = tiny_swin().train()
    ckpt = tiny_swin().train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.grad_checkpointing = True
    x = torch.randn(1, 3, 64, 64)
    for m in (plain, ckpt):
        sum(f.square().mean() for f in m(x)).backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_pretrained_without_local_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="checkpoint_path"):
        TimmBackbone(model_name="resnet18", pretrained=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TimmBackbone(
            model_name="resnet18", pretrained=True, checkpoint_path=str(tmp_path / "none.pth")
        )
    with pytest.raises(ValueError, match="pretrained=False"):
        TimmBackbone(model_name="resnet18", checkpoint_path=str(tmp_path / "w.pth"))


def test_pretrained_loads_a_local_file(tmp_path) -> None:
    src = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    backbone = TimmBackbone(
        model_name="resnet18", out_indices=(1, 2, 3, 4), pretrained=True, checkpoint_path=str(path)
    )
    torch.testing.assert_close(backbone.body.conv1.weight, src.conv1.weight)


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no_such_net"):
        TimmBackbone(model_name="no_such_net")


def test_declared_channels_are_checked() -> None:
    net = TimmBackbone(
        model_name="regnetx_002", out_indices=[1, 2, 3, 4], channels=[24, 56, 152, 368]
    )
    assert net.channels == [24, 56, 152, 368]
    with pytest.raises(ValueError, match=r"regnetx_002.*channels=\[24, 56, 152, 369\].*model\.net"):
        TimmBackbone(
            model_name="regnetx_002", out_indices=[1, 2, 3, 4], channels=[24, 56, 152, 369]
        )
