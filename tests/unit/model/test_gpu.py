"""The network on CUDA: the gather deformable-attention core against grid_sample, and
CropFormer-tiny forward + backward in bf16 autocast against CPU fp32 (skipped without a GPU)."""

from __future__ import annotations

import copy

import torch
from helpers.run_if import run_if

from cropformer.model.ms_deform_attn import ms_deform_attn_core, ms_deform_attn_core_gather


def _msda_inputs(
    device: str,
) -> tuple[torch.Tensor, list[tuple[int, int]], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(16, 24), (8, 12), (4, 6)]
    n, lq, m, d, p = 2, 50, 4, 8, 4
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2  # some outside
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g).softmax(-1)
    return value.to(device), shapes, loc.to(device), weights.to(device)


def _grads(fn, value, shapes, loc, weights) -> tuple[torch.Tensor, list[torch.Tensor]]:
    inputs = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
    out = fn(inputs[0], shapes, inputs[1], inputs[2])
    out.backward(torch.ones_like(out))
    return out.detach(), [t.grad for t in inputs]  # type: ignore[misc]


@run_if(gpu=True)
def test_gather_core_on_cuda_equals_grid_sample() -> None:
    value, shapes, loc, weights = _msda_inputs("cuda")
    ref, ref_grads = _grads(ms_deform_attn_core, value, shapes, loc, weights)
    out, grads = _grads(ms_deform_attn_core_gather, value, shapes, loc, weights)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # and CUDA equals the CPU result of the same core
    cpu = ms_deform_attn_core_gather(*(_msda_inputs("cpu")))
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-5, rtol=1e-5)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@run_if(gpu=True, bf16=True)
def test_cropformer_tiny_bf16_cuda_matches_cpu_fp32() -> None:
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    cfg = compose_config(["model=cropformer_tiny"])
    torch.manual_seed(0)
    net_cpu = instantiate(cfg.model.net).eval()  # no dropout draws; backward still runs
    net_gpu = copy.deepcopy(net_cpu).cuda()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 64, 96), generator=g, dtype=torch.uint8)
    sizes = torch.tensor([[64, 96]] * 4)

    def run(net, device: str, autocast: bool):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = net(images.to(device), num_views=2, view_sizes=sizes.to(device))
        masks = out["batch_level"]["pred_masks"].float()
        logits = out["batch_level"]["pred_logits"].float()
        (masks.sigmoid().mean() + logits.log_softmax(-1)[..., 0].mean()).backward()
        grads = torch.cat(
            [p.grad.flatten().float() for p in net.parameters() if p.grad is not None]
        )
        return masks.detach().cpu(), logits.detach().cpu(), grads.cpu()

    m_ref, l_ref, g_ref = run(net_cpu, "cpu", autocast=False)
    m, lg, gr = run(net_gpu, "cuda", autocast=True)
    assert m.shape == m_ref.shape and torch.isfinite(m).all() and torch.isfinite(gr).all()
    # bf16 keeps ~3 significant digits; the fp32 islands (pixel decoder, losses) keep the rest
    assert _relative_error(m, m_ref) < 0.05
    assert _relative_error(lg, l_ref) < 0.05
    assert _relative_error(gr, g_ref) < 0.1
    assert torch.nn.functional.cosine_similarity(gr, g_ref, dim=0) > 0.99
