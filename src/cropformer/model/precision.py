"""Regions of the network that stay fp32 under autocast."""

from __future__ import annotations

import contextlib

import torch


def fp32_region(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Autocast off for the block; entered only when autocast is on (same numerics either way).

    Entering ``torch.autocast(enabled=False)`` without autocast would still make the block a
    separate sub-graph under ``torch.export``, whose shapes the ONNX exporter then fixes to the
    example input's (an exported file without dynamic height and width).
    """
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
