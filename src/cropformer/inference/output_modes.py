"""Output modes: which entities of a fused prediction are written, and how they are numbered.

Two formats share one selection rule:

- ``fused`` (default): every output of the fusion, numbered ``k + 1`` for output ``k`` (empty
  outputs keep their number, as in ``<stem>_ids.png`` so far). ``score_threshold`` and
  ``min_area`` are off unless set.
- ``official_demo``: the id map of the official ``demo_cropformer/demo_from_dirs.py`` (qqlu/Entity)
  that 3D pipelines save: outputs with ``score >= 0.5`` (``--confidence-threshold``) are kept and
  output ``j`` of the kept list gets id ``j + 1``; the demo then paints the kept masks in ascending
  score order so that a higher score wins an overlap. The fused masks here never overlap (the
  fusion already painted them, as the official fusion does), so the painting order cannot change
  a pixel and the id map is a lookup of the fused one.

Both formats take ``min_area`` (pixels; an output with a smaller final mask is dropped and gets no
number, as in MaskClustering's patched demo) and ``score_threshold`` (``score >= threshold``
kept; ``None`` = the format's default). Ids are written as uint16 (up to 65535 entities) or, on
request, as the demo's uint8, which refuses more than 255 entities instead of wrapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cropformer.schema import EntityPrediction
from cropformer.utils.errors import UserError
from cropformer.utils.id_maps import remap_ids

FORMATS = ("fused", "official_demo")
ID_DTYPES: dict[str, type[np.unsignedinteger[Any]]] = {"uint16": np.uint16, "uint8": np.uint8}
#: per-output keys of class-aware predictions (``ClassAwareFusion``), kept with their outputs;
#: the image-level maps (panoptic, semantic) describe all outputs and are not carried over
PER_OUTPUT_KEYS = ("labels", "category_ids", "category_names")
#: the official demo's ``--confidence-threshold`` default
DEMO_SCORE_THRESHOLD = 0.5


@dataclass(frozen=True)
class OutputMode:
    """How a fused ``EntityPrediction`` becomes the written ``[H, W]`` id map.

    Args:
        format: ``fused`` or ``official_demo`` (see the module docstring).
        score_threshold: keep outputs with ``score >= score_threshold``; None = the format's
            default (``official_demo``: 0.5; ``fused``: keep all).
        min_area: drop outputs whose final mask has fewer pixels (0 = keep all).
        id_dtype: ``uint16`` (0 = none, up to 65535 entities) or ``uint8`` (the demo's type; more
            than 255 kept entities raise instead of wrapping).
    """

    format: str = "fused"
    score_threshold: float | None = None
    min_area: int = 0
    id_dtype: str = "uint16"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserError(f"output_format={self.format!r}: use one of {', '.join(FORMATS)}")
        t = self.score_threshold
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0
        ):
            raise UserError(
                f"score_threshold={t!r}: use a number in [0, 1] (score >= it is kept) or null "
                "(the format's default)"
            )
        m = self.min_area
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise UserError(f"min_area={m!r}: use an integer >= 0 (pixels; 0 keeps all)")
        if self.id_dtype not in ID_DTYPES:
            raise UserError(f"id_dtype={self.id_dtype!r}: use uint16 (default) or uint8")

    @classmethod
    def of(cls, value: OutputMode | str | Mapping[str, Any] | None) -> OutputMode:
        """An ``OutputMode`` from itself, a format name, a dict of its fields or None (fused)."""
        if isinstance(value, OutputMode):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(format=value)
        unknown = set(value) - {"format", "score_threshold", "min_area", "id_dtype"}
        if unknown:
            raise UserError(
                f"unknown output setting(s) {sorted(unknown)}; known: format, score_threshold, "
                "min_area, id_dtype"
            )
        return cls(**{k: v for k, v in value.items() if v is not None or k == "score_threshold"})

    @property
    def threshold(self) -> float | None:
        """The score threshold in force (None: no score filter)."""
        if self.score_threshold is not None:
            return float(self.score_threshold)
        return DEMO_SCORE_THRESHOLD if self.format == "official_demo" else None

    @property
    def filters(self) -> bool:
        """Whether anything is dropped (else the fused numbering ``k + 1`` is kept as is)."""
        return self.threshold is not None or self.min_area > 0

    def settings(self) -> dict[str, Any]:
        """The fields with the threshold in force: what changes the written pixels."""
        return {**asdict(self), "score_threshold": self.threshold}

    def describe(self) -> str:
        parts = [self.format]
        if self.threshold is not None:
            parts.append(f"score >= {self.threshold:g}")
        if self.min_area:
            parts.append(f"area >= {self.min_area} px")
        parts.append(self.id_dtype)
        return ", ".join(parts)

    def kept(self, pred: EntityPrediction) -> torch.Tensor:
        """Indices of the outputs kept, in output order. Shape: (M',) int64."""
        scores = torch.as_tensor(pred["scores"]).detach().cpu().float()
        keep = torch.ones(scores.numel(), dtype=torch.bool)
        if self.threshold is not None:
            keep &= scores >= self.threshold
        if self.min_area > 0:
            keep &= output_areas(pred) >= self.min_area
        return torch.nonzero(keep).flatten()

    def select(self, pred: EntityPrediction) -> EntityPrediction:
        """The kept outputs renumbered ``0..M'-1`` in output order (id -1 = none), with their
        classes when the prediction is class-aware (``PER_OUTPUT_KEYS``).

        Without filters the prediction is returned unchanged.
        """
        if not self.filters:
            return pred
        ids = torch.as_tensor(pred["id_map"]).detach().cpu()
        scores = torch.as_tensor(pred["scores"]).detach().cpu()
        queries = torch.as_tensor(pred["query_indices"]).detach().cpu()
        kept = self.kept(pred)
        M = int(scores.numel())
        lut = torch.full((M + 1,), -1, dtype=torch.int32)  # the last entry maps id -1 to -1
        lut[kept] = torch.arange(kept.numel(), dtype=torch.int32)
        chosen = EntityPrediction(
            id_map=remap_ids(ids, lut), scores=scores[kept], query_indices=queries[kept]
        )
        extra: dict[str, Any] = dict(pred)  # a class-aware prediction's per-output classes
        for key in PER_OUTPUT_KEYS:
            if key in extra:
                values = extra[key]
                if isinstance(values, torch.Tensor):
                    chosen[key] = values.detach().cpu()[kept]  # type: ignore[literal-required]
                else:
                    chosen[key] = [values[int(k)] for k in kept]  # type: ignore[literal-required]
        return chosen

    def id_map(self, pred: EntityPrediction, *, where: str = "image") -> np.ndarray:
        """The written map: 0 = no entity, ``j + 1`` = kept output ``j``.

        Shape: (H, W) of ``id_dtype``.

        Raises:
            UserError: more kept outputs than ``id_dtype`` can number (names ``where``).
        """
        chosen = self.select(pred)
        count = int(torch.as_tensor(chosen["scores"]).numel())
        dtype = ID_DTYPES[self.id_dtype]
        limit = int(np.iinfo(dtype).max)
        if count > limit:
            hint = (
                "use id_dtype=uint16 (the default), or raise score_threshold/min_area"
                if self.id_dtype == "uint8"
                else "use the RLE json (write.rle_json=true) instead"
            )
            raise UserError(
                f"{where}: {count} entities do not fit id_dtype={self.id_dtype} (at most {limit}); "
                f"{hint}"
            )
        ids = torch.as_tensor(chosen["id_map"]).detach().cpu().numpy()
        return (ids.astype(np.int32, copy=False) + 1).astype(dtype)


def output_areas(pred: EntityPrediction) -> torch.Tensor:
    """Pixels of each output's final mask. Shape: (M,) int64."""
    ids = torch.as_tensor(pred["id_map"]).detach().cpu()
    M = int(torch.as_tensor(pred["scores"]).numel())
    area = torch.zeros(M + 1, dtype=torch.int64)
    rows = max(1, (1 << 21) // max(1, ids.shape[-1]))  # row bands bound the int64 temporary
    for y in range(0, ids.shape[0], rows):
        area += torch.bincount(ids[y : y + rows].reshape(-1).long() + 1, minlength=M + 1)
    return area[1:]  # bin 0 counted the pixels in no output (id -1)
