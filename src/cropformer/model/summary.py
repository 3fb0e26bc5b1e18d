"""Parameter counts of a configured network: ``python -m cropformer.model.summary model=<name>``.

Accepts any Hydra overrides of ``conf/train.yaml`` (e.g. ``model=cropformer_swinl
model.net.decoder.num_queries=200``). Prints a table, then one JSON line with the keys
``backbone``, ``pixel_decoder``, ``decoder``, ``association``, ``total`` (parameters; frozen
BatchNorm statistics are buffers and do not count). The network is built on the meta device, so
even Swin-L costs no memory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import torch
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


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Compose the config with ``argv`` overrides, build ``cfg.model.net``, print the counts."""
    # Hydra is only needed by this command-line entry point, not by the network modules.
    from hydra.utils import instantiate

    from cropformer.utils.config import compose_config

    overrides = list(sys.argv[1:] if argv is None else argv)
    cfg = compose_config(overrides)
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    counts = count_parameters(net)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    name = cfg.model.get("name", None) or next((o for o in overrides if o.startswith("model=")), "")
    if name:
        print(name)
    print(format_table(counts, trainable))
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
