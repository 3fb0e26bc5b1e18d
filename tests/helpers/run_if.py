"""``run_if``: skip a test cleanly when the machine lacks what it needs (RunIf-style).

    @run_if(gpu=True)
    def test_on_cuda(): ...

The mark also carries the ``gpu`` marker, so ``-m gpu`` selects exactly these tests.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch


def run_if(*, gpu: bool = False, min_gpus: int = 1, bf16: bool = False) -> Any:
    """A decorator that skips (with the reason) unless every requirement is met.

    Args:
        gpu: needs ``min_gpus`` CUDA devices.
        bf16: needs a CUDA device with bfloat16 support.
    """
    reasons: list[str] = []
    marks: list[Any] = []
    if gpu or bf16:
        marks.append(pytest.mark.gpu)
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n < min_gpus:
            reasons.append(f"needs {min_gpus} CUDA device(s), found {n}")
        elif bf16 and not torch.cuda.is_bf16_supported():
            reasons.append("needs a CUDA device with bfloat16")

    def wrap(fn: Any) -> Any:
        for m in marks:
            fn = m(fn)
        return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))(fn)

    return wrap
