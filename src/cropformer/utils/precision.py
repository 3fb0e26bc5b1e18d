"""The one precision table: every precision name the commands, the API, Lightning and the
predictor accept, with what it means.

Users write ``fp32``, ``bf16`` or ``fp16`` (``precision=`` of predict.py / eval.py and
``load_segmenter``); Lightning's ``trainer.precision`` names (``32-true``, ``bf16-mixed``, ``16``,
...) are accepted wherever a precision is read. Each name maps to a :class:`Precision`: its
number family, the dtype autocast runs the network in (None: no autocast), and the Lightning
``trainer.precision`` it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """What a precision name means.

    Attributes:
        family: ``fp32``, ``bf16``, ``fp16``, ``fp64`` or ``fp8`` (transformer-engine).
        autocast: the dtype autocast runs the network in; None = no autocast (fp32, or
            Lightning's ``-true`` precisions that cast the weights instead).
        trainer: the Lightning ``trainer.precision`` of this name.
    """

    family: str
    autocast: torch.dtype | None
    trainer: str


_FP32 = Precision("fp32", None, "32-true")
_BF16 = Precision("bf16", torch.bfloat16, "bf16-mixed")
_FP16 = Precision("fp16", torch.float16, "16-mixed")
_FP64 = Precision("fp64", None, "64-true")

#: every accepted name (str, and the ints Lightning accepts) -> its meaning
PRECISIONS: dict[str | int, Precision] = {
    "fp32": _FP32,
    "32": _FP32,
    "32-true": _FP32,
    32: _FP32,
    "bf16": _BF16,
    "bf16-mixed": _BF16,
    "bf16-true": Precision("bf16", None, "bf16-true"),
    "fp16": _FP16,
    "16": _FP16,
    "16-mixed": _FP16,
    16: _FP16,
    "16-true": Precision("fp16", None, "16-true"),
    "64": _FP64,
    "64-true": _FP64,
    64: _FP64,
    "transformer-engine": Precision("fp8", None, "transformer-engine"),
    "transformer-engine-float16": Precision("fp8", None, "transformer-engine-float16"),
}
#: the names users pass to predict.py / eval.py / ``load_segmenter`` (``precision=``)
USER_PRECISIONS = ("fp32", "bf16", "fp16")
#: the names the predictor runs (fp32 or autocast; not the weight-casting ``-true`` ones)
INFERENCE_PRECISIONS = tuple(
    k
    for k, v in PRECISIONS.items()
    if isinstance(k, str) and v.trainer in ("32-true", "bf16-mixed", "16-mixed")
)


def precision_of(name: str | int) -> Precision | None:
    """The meaning of a precision name, or None when no table entry has it."""
    return PRECISIONS.get(name if isinstance(name, int) else str(name))


def autocast_dtype(name: str | int) -> torch.dtype | None:
    """The dtype autocast runs the network in under ``name`` (None: none, or unknown name)."""
    entry = precision_of(name)
    return entry.autocast if entry is not None else None
