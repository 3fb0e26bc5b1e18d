"""The masked-attention decisions of the decoder: recorded, or taken from another run.

Each masked-attention layer lets a query attend only where the previous prediction's mask logit
(at the attention level's resolution) is >= 0 (``sigmoid < 0.5`` blocks, official). The decision
is a step function: a logit within float rounding of 0 is blocked in one correct fp32
computation and open in another (eager PyTorch, ONNX Runtime, OpenVINO sum in other orders). One
such cell changes what its query reads, and through the self-attention every later prediction;
with random weights (no query has settled on an entity) this moves the outputs by up to ~1e-2 x
max |value|, far more than the ~1e-6 of the arithmetic itself.

So the export's verification compares an exported file with eager on the same decisions: the
file (exported with ``decisions=True``) also returns the logits behind every decision; eager runs
again taking the file's decisions (:func:`attention_decisions` with ``override``) and records its
own logits. The file is right when (1) with the same decisions the raw outputs agree within the
tolerance and (2) every decision eager was made to take differently sat within the tolerance of
the threshold (``|logit| <= tolerance x max |logit|`` of that prediction): a rounding tie, not a
different computation (``cropformer.export.verify.compare``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import Tensor

from cropformer.model.decoder import MaskedAttentionDecoder


@contextlib.contextmanager
def attention_decisions(
    decoder: MaskedAttentionDecoder, override: Sequence[Tensor] | None = None
) -> Iterator[list[Tensor]]:
    """Within the block, record the logits behind every attention-mask decision of ``decoder``
    in call order; with ``override``, decide from those logits
        instead (one per decision, same shapes, e.g. an exported file's).

        Yields:
            The recorded logits, filled as the decoder runs: per prediction head (B, Q, T*h_l*w_l),
            the image-level pass's 1 + L heads first, then the batch-level pass's.

        Raises:
            ValueError: on exit or during the run, when ``override`` has another count or shape.
    """
    recorded: list[Tensor] = []
    queue = None if override is None else list(override)
    blocked = decoder._blocked  # the bound method of the class

    def decide(logits: Tensor) -> Tensor:
        recorded.append(logits)
        if queue is None:
            return blocked(logits)
        if not queue:
            raise ValueError(f"override has {len(override or ())} decisions, the run makes more")
        forced = queue.pop(0)
        if tuple(forced.shape) != tuple(logits.shape):
            raise ValueError(
                f"decision {len(recorded) - 1}: override shape {tuple(forced.shape)}, the run's "
                f"{tuple(logits.shape)}"
            )
        return blocked(forced.to(logits.device, logits.dtype))

    decoder._blocked = decide  # type: ignore[method-assign]
    try:
        yield recorded
    finally:
        del decoder._blocked
    if queue:
        raise ValueError(f"override has {len(queue)} decisions more than the run makes")


def forced_decisions(own: Sequence[Tensor], forced: Sequence[Tensor]) -> tuple[int, float]:
    """Cells where a run decided from ``forced`` logits other than its ``own`` would have, and
    the largest ``|own logit| / max |own logits|`` (of that head) among them (0 when none).

    Shape: each (B, Q, L), matching pairs.
    """
    count, margin = 0, 0.0
    for mine, theirs in zip(own, forced):
        flipped = (mine.sigmoid() < 0.5) != (theirs.to(mine.dtype).sigmoid() < 0.5)
        if bool(flipped.any()):
            count += int(flipped.sum())
            scale = float(mine.abs().max()) or 1.0
            margin = max(margin, float(mine[flipped].abs().max()) / scale)
    return count, margin
