"""CropFormer end to end: Outputs contract, gradients, autocast, batching, input checks, configs."""

from __future__ import annotations

import pytest
import torch
from model_builders import build_net

from cropformer.model.cropformer import CropFormer


def _images(n: int, h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def _mask_logits(level, pred) -> torch.Tensor:
    """pred_masks, or the full logits from the factored training outputs."""
    if "pred_masks" in pred:
        return pred["pred_masks"]
    features = level["mask_features"]
    equation = "bqc,bchw->bqhw" if features.dim() == 4 else "bqc,btchw->bqthw"
    return torch.einsum(equation, pred["mask_embed"], features)


def _loss_like(outputs) -> torch.Tensor:
    total = torch.zeros(())
    for level in outputs.values():
        for pred in [level, *level["aux_outputs"]]:
            total = total + pred["pred_logits"].log_softmax(-1)[..., 0].mean()
            total = total + _mask_logits(level, pred).sigmoid().mean()
    return total


@pytest.mark.parametrize("num_views", [1, 2])
def test_outputs_contract(net: CropFormer, num_views: int) -> None:
    b = 2
    out = net.eval()(_images(b * num_views, 60, 90), num_views=num_views)
    q = net.num_queries
    # 60 x 90 is padded to 64 x 96 -> masks at stride 4: 16 x 24
    assert out["image_level"]["pred_logits"].shape == (b * num_views, q, 2)
    assert out["image_level"]["pred_masks"].shape == (b * num_views, q, 16, 24)
    assert out["batch_level"]["pred_logits"].shape == (b, q, 2)
    assert out["batch_level"]["pred_masks"].shape == (b, q, num_views, 16, 24)
    assert len(out["image_level"]["aux_outputs"]) == len(out["batch_level"]["aux_outputs"]) == 3
    # training forward: full-resolution logits by default (official); factored on request
    assert (
        "pred_masks"
        in net.train()(_images(b * num_views, 60, 90), num_views=num_views)["batch_level"]
    )
    net.decoder.training_mask_logits = "factored"
    train = net.train()(_images(b * num_views, 60, 90), num_views=num_views)
    c = net.decoder.mask_head.layers[-1].out_features
    image, batch = train["image_level"], train["batch_level"]
    assert "pred_masks" not in image and "pred_masks" not in batch
    assert image["mask_features"].shape == (b * num_views, c, 16, 24)
    assert batch["mask_features"].shape == (b, num_views, c, 16, 24)
    for level, n in ((image, b * num_views), (batch, b)):
        for pred in [level, *level["aux_outputs"]]:
            assert pred["mask_embed"].shape == (n, q, c)


def test_mask2former_mode_has_no_batch_level() -> None:
    net = build_net(association=False)
    out = net(_images(3), num_views=1)
    assert set(out) == {"image_level"}


def test_every_parameter_gets_a_gradient(net: CropFormer) -> None:
    # perturb the weights (as the official bundle does): the zero-initialised deformable-attention
    # weights would otherwise hide the level embedding's gradient at initialisation
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    net.train()
    _loss_like(net(_images(4, 32, 64), num_views=2)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_bf16_autocast_keeps_fp32_islands(net: CropFormer) -> None:
    net.eval()
    seen = {}
    net.pixel_decoder.register_forward_hook(
        lambda m, i, o: seen.update(mask=o[0].dtype, levels={f.dtype for f in o[1]})
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(_images(2, 32, 32), num_views=2)
    assert seen == {"mask": torch.float32, "levels": {torch.float32}}
    for level in out.values():
        assert torch.isfinite(level["pred_masks"].float()).all()
        assert torch.isfinite(level["pred_logits"].float()).all()


def test_several_images_per_batch_equal_one_image_at_a_time(net: CropFormer) -> None:
    net.eval()
    images = _images(6, 32, 64)
    with torch.no_grad():
        together = net(images, num_views=3)
        alone = [net(images[i * 3 : (i + 1) * 3], num_views=3) for i in range(2)]
    for key in ("pred_logits", "pred_masks"):
        ref = torch.cat([a["batch_level"][key] for a in alone])
        torch.testing.assert_close(together["batch_level"][key], ref, atol=1e-4, rtol=0)
        ref2 = torch.cat([a["image_level"][key] for a in alone])
        torch.testing.assert_close(together["image_level"][key], ref2, atol=1e-4, rtol=0)


def test_normalisation_rezeroes_padding(net: CropFormer) -> None:
    images = torch.full((2, 3, 40, 50), 200, dtype=torch.uint8)
    sizes = torch.tensor([[40, 50], [30, 20]])
    x = net.normalize(images, sizes)
    assert x.shape == (2, 3, 64, 64)
    assert (x[1, :, 30:, :] == 0).all() and (x[1, :, :, 20:] == 0).all()
    assert (x[1, :, :30, :20] != 0).all()
    expected = (200 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor(
        [58.395, 57.12, 57.375]
    )
    torch.testing.assert_close(x[0, :, 0, 0], expected)
    # a view of the same content: the padding of a view must not change its prediction
    net.eval()
    with torch.no_grad():
        a = net(images[:1], view_sizes=sizes[:1])["image_level"]["pred_logits"]
        b = net(images[:1])["image_level"]["pred_logits"]
    torch.testing.assert_close(a, b)


def test_normalized_input_path_equals_uint8_path(net: CropFormer) -> None:
    net.eval()
    images = _images(2, 40, 50)
    sizes = torch.tensor([[40, 50], [33, 41]])
    with torch.no_grad():
        a = net(images, view_sizes=sizes)["image_level"]["pred_masks"]
        b = net(net.normalize(images, sizes), normalized=True)["image_level"]["pred_masks"]
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_bad_inputs_are_clear_errors(net: CropFormer) -> None:
    with pytest.raises(ValueError, match="num_views"):
        net(_images(3), num_views=2)
    with pytest.raises(ValueError, match="RGB"):
        net(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="view_sizes"):
        net(_images(2), view_sizes=torch.tensor([[10, 10]]))
    with pytest.raises(ValueError, match="3 values"):
        CropFormer(
            backbone=net.backbone,
            pixel_decoder=net.pixel_decoder,
            decoder=net.decoder,
            pixel_mean=(1.0, 2.0),
        )


@pytest.mark.parametrize("name", ["cropformer_tiny", "mask2former_tiny"])
def test_tiny_configs_instantiate_and_run(name: str) -> None:
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    cfg = compose_config([f"model={name}"])
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    n_params = sum(p.numel() for p in net.parameters())
    assert 1_000_000 < n_params < 5_000_000  # "a few million": trainable on 2 CPU cores
    out = net.eval()(_images(4), num_views=2, view_sizes=torch.tensor([[64, 96]] * 4))
    assert out["image_level"]["pred_masks"].shape == (4, net.num_queries, 16, 24)
    assert ("batch_level" in out) == (name == "cropformer_tiny")


def test_inference_options_keep_the_final_predictions(net: CropFormer) -> None:
    """aux=False drops only the intermediate predictions; view_chunk only changes the batching."""
    net.eval()
    images = _images(4, 32, 64)
    with torch.no_grad():
        ref = net(images, num_views=2)
        lean = net(images, num_views=2, aux=False, view_chunk=1)
        two = net(images, num_views=2, view_chunk=3)
    for level in ("image_level", "batch_level"):
        assert lean[level]["aux_outputs"] == []
        assert len(two[level]["aux_outputs"]) == 3
        for key in ("pred_logits", "pred_masks"):
            torch.testing.assert_close(lean[level][key], ref[level][key], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(two[level][key], ref[level][key], rtol=1e-4, atol=1e-4)
            # chunked passes merge the intermediate predictions of all views in order
            for a, b in zip(two[level]["aux_outputs"], ref[level]["aux_outputs"], strict=True):
                torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_bad_view_chunk_is_rejected(net: CropFormer) -> None:
    with pytest.raises(ValueError, match="view_chunk=0"):
        net(_images(2), num_views=2, view_chunk=0)


def test_activation_checkpointing_keeps_values_and_gradients() -> None:
    """Backbone, pixel-decoder and decoder checkpointing change memory, not the math."""
    results = []
    for flag in (False, True):
        net = build_net()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        net.backbone.grad_checkpointing = flag
        net.pixel_decoder.grad_checkpointing = flag
        net.decoder.grad_checkpointing = flag
        net.train()
        # one watched sub-module per part: checkpointing runs it again in backward
        watched = {
            "backbone": net.backbone.body.model.layers[0].blocks[0].norm1,
            "pixel_decoder": net.pixel_decoder.encoder_layers[0],
            "decoder": net.decoder.ffn_layers[0],
        }
        calls = dict.fromkeys(watched, 0)

        # pre-hooks: the recomputation may stop early, before a module returns
        def count(part: str, calls: dict[str, int] = calls):
            return lambda *_: calls.__setitem__(part, calls[part] + 1)

        for part, mod in watched.items():
            mod.register_forward_pre_hook(count(part))
        loss = _loss_like(net(_images(4, 32, 64), num_views=2))
        forward_calls = dict(calls)
        loss.backward()
        for part in watched:
            assert calls[part] == forward_calls[part] * (2 if flag else 1), (part, calls)
        results.append((loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7, msg=name)
