"""Parameter counts of a configured network: ``python -m cropformer.cli.summary model=<name>``.

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
from hydra.utils import instantiate

from cropformer.model.summary import count_parameters, format_table
from cropformer.run.config import compose_config


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Compose the config with ``argv`` overrides, build ``cfg.model.net``, print the counts."""
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
