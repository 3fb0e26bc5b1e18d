"""Parameter counts of a network, per part (the command is ``python -m cropformer.cli.summary``).

Frozen BatchNorm statistics are buffers and do not count.
"""

from __future__ import annotations

from torch import nn

PARTS = ("backbone", "pixel_decoder", "decoder", "association")


def count_parameters(net: nn.Module) -> dict[str, int]:
    """Parameters per part of a :class:`~cropformer.model.cropformer.CropFormer` and in total."""
    counts = {}
    for part in PARTS:
        module = getattr(net, part, None)
        counts[part] = 0 if module is None else sum(p.numel() for p in module.parameters())
    counts["total"] = sum(p.numel() for p in net.parameters())
    return counts


def format_table(counts: dict[str, int], trainable: int | None = None) -> str:
    """A readable table of ``count_parameters`` output."""
    total = max(counts["total"], 1)
    lines = [f"{'part':<15}{'parameters':>15}{'share':>9}", "-" * 39]
    for part in (*PARTS, "total"):
        lines.append(f"{part:<15}{counts[part]:>15,}{100 * counts[part] / total:>8.1f}%")
    if trainable is not None:
        lines.append(f"{'trainable':<15}{trainable:>15,}")
    return "\n".join(lines)
