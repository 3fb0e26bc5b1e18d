"""The network as it is exported: padded 0..255 views and their sizes in, raw predictions out.

The graph is the eager network itself, with one substitution that keeps the numerics: the
deformable attention uses its ``grid_sample`` core (the official CPU formulation, one op per
level) instead of the default gather core, whose query-chunking loop (``r1 = min(N * Lq, r0 +
step)``) exports to ``Slice``/``ReduceSum`` nodes of dynamic element type that OpenVINO refuses
and to a loop that depends on the input size. Both cores compute the same bilinear samples; the
export tests compare the exported outputs with the eager (gather) network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

from torch import Tensor, nn

from cropformer.export.decisions import attention_decisions
from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.model.ms_deform_attn import MSDeformAttn

#: names of the exported outputs; the batch-level pair is absent in Mask2Former mode
OUTPUT_NAMES = ("image_logits", "image_masks", "batch_logits", "batch_masks")
INPUT_NAMES = ("images", "view_sizes")


class ExportGraph(nn.Module):
    """``CropFormer`` / Mask2Former with a fixed number of views per image, tensors in and out.

    Args:
        net: the network (``cropformer.model.cropformer.CropFormer``).
        num_views: T, views per image (1 + crops of the test settings; 1 for Mask2Former).
        decisions: also return the logits behind every attention-mask decision (a file for the
            export's verification, ``cropformer.export.decisions``; not for deployment).

    Shape:
        images: (N, 3, H, W) float 0..255 RGB, N = B*T views image-major, H and W multiples of
            the network's ``size_divisibility`` (32); view_sizes: (N, 2) int64 unpadded (h, w).
        returns image_logits (N, Q, 2), image_masks (N, Q, H/4, W/4) and, with a batch-level
        pass, batch_logits (B, Q, 2), batch_masks (B, Q, T, H/4, W/4); with ``decisions``, then
        ``decision_count`` logits (B', Q, T'*h_l*w_l) per prediction head: the image-level
        pass's (B' = N, T' = 1), then the batch-level pass's (B' = B, T' = T).
    """

    def __init__(self, net: nn.Module, num_views: int, decisions: bool = False) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views={num_views} must be >= 1")
        self.net = net
        self.num_views = num_views
        self.decisions = decisions

    @property
    def decision_count(self) -> int:
        """Decision outputs: 1 + layers per pass (0 without ``decisions``)."""
        if not self.decisions:
            return 0
        layers = cast(MaskedAttentionDecoder, self.net.decoder).num_layers
        return (1 + layers) * (2 if self.has_batch_level else 1)

    @property
    def has_batch_level(self) -> bool:
        """Whether the graph returns the batch-level pass (CropFormer with crops)."""
        return getattr(self.net, "association", None) is not None

    def forward(self, images: Tensor, view_sizes: Tensor) -> tuple[Tensor, ...]:
        recorded: list[Tensor] = []
        with contextlib.ExitStack() as stack:
            if self.decisions:
                decoder = cast(MaskedAttentionDecoder, self.net.decoder)
                recorded = stack.enter_context(attention_decisions(decoder))
            out = self.net(images, num_views=self.num_views, view_sizes=view_sizes, aux=False)
        image = out["image_level"]
        result = [image["pred_logits"], image["pred_masks"]]
        if "batch_level" in out:
            result += [out["batch_level"]["pred_logits"], out["batch_level"]["pred_masks"]]
        return tuple(result + recorded)


@contextlib.contextmanager
def export_formulation(net: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``net`` computes with export-friendly cores (same numerics); restored
    afterwards. Sets every deformable attention to its ``grid_sample`` core."""
    saved = [(m, m.impl) for m in net.modules() if isinstance(m, MSDeformAttn)]
    try:
        for module, _ in saved:
            module.impl = "grid_sample"
        yield net
    finally:
        for module, impl in saved:
            module.impl = impl
