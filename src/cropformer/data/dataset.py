"""Map-style dataset: record -> views (images + label maps) of one sample."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cropformer.data.decode import SampleError, label_source_for, open_image
from cropformer.data.records import Record
from cropformer.data.target_classes import TargetClasses, group_labels
from cropformer.data.view_sampler import SampleDraw, ViewSampler
from cropformer.data.views import (
    ViewSpec,
    render_image_view,
    render_label_view,
    required_scale,
    to_chw_tensor,
)

log = logging.getLogger(__name__)


class EntityDataset(Dataset):
    """Samples of entity records in the Batch layout (collate with :func:`collate`).

    Args:
        records: the dataset.
        sampler: the view draw (train or eval, see :class:`ViewSampler`).
        with_targets: produce label maps of the non-crowd entities (False for predict).
        skip_bad_samples: a sample that cannot be read is replaced by the next readable one
            with a warning naming the file (counted in ``num_skipped``); otherwise a
            SampleError naming the file is raised.
        jpeg_draft: decode JPEGs at the smallest 1/2^k scale that still serves the largest view.
            # parity: the official mapper decodes at full size; False reproduces its pixels
            exactly, True differs by resampling noise (about 1 grey level) and is several
            times faster on high-resolution images.
        seed: base seed; each sample's draw comes from (seed, torch's per-worker RNG, index).
        pixel_transform: optional callable ``(views, seed) -> views`` (albumentations,
            ``transforms.build_pixel_transform``), train only.
        target_classes: class-aware targets (which entities, which class index; samples then
            carry ``labels``); None = entity targets (every non-crowd entity, class 0).
    """

    def __init__(
        self,
        records: Sequence[Record],
        sampler: ViewSampler,
        *,
        with_targets: bool = True,
        skip_bad_samples: bool = False,
        jpeg_draft: bool = True,
        seed: int | None = None,
        pixel_transform: Callable[[list[np.ndarray], int], list[np.ndarray]] | None = None,
        target_classes: TargetClasses | None = None,
    ) -> None:
        self.records = list(records)
        self.sampler = sampler
        self.with_targets = with_targets
        self.skip_bad_samples = skip_bad_samples
        self.jpeg_draft = jpeg_draft
        self.seed = seed
        self.pixel_transform = pixel_transform
        self.target_classes = target_classes
        self.num_skipped = 0
        self._bad: set[int] = set()  # known-bad indices of this worker: skipped silently later

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, index: int, draw_seed: int | None = None) -> np.random.Generator:
        if not self.sampler.train:
            return np.random.default_rng(index)
        if draw_seed is not None:  # from SeededShuffle: independent of the model's RNG use
            return np.random.default_rng([draw_seed, index, self.seed or 0])
        # torch's RNG is seeded per worker and per epoch by the DataLoader (and by
        # seed_everything in the main process), so draws differ across epochs and workers
        # yet replay exactly under the same seed.
        draw = int(torch.randint(0, 2**62, (1,)).item())
        return np.random.default_rng([draw, index, self.seed or 0])

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``index``; an ``(index, draw_seed)`` pair (``SeededShuffle``) fixes its draw."""
        draw_seed: int | None = None
        if isinstance(index, tuple):
            draw_seed = int(index[1])
            index = int(index[0])
        tries = len(self.records) if self.skip_bad_samples else 1
        for k in range(tries):
            i = (index + k) % len(self.records)
            if i in self._bad:
                continue
            try:
                return self.load(i, draw_seed=draw_seed)
            except (SampleError, FileNotFoundError, ValueError, OSError) as e:
                rec = self.records[i]
                if not self.skip_bad_samples:
                    if isinstance(e, SampleError) and rec.file_name in str(e):
                        raise
                    raise SampleError(f"cannot load sample {rec.image_path}: {e}") from e
                self.num_skipped += 1
                self._bad.add(i)
                warnings.warn(
                    f"skipping bad sample {rec.image_path} ({e}); {self.num_skipped} skipped "
                    "so far in this worker",
                    stacklevel=2,
                )
        raise SampleError("every sample of the dataset failed to load (see warnings)")

    @staticmethod
    def _decode_size(height: int, width: int, view: ViewSpec) -> tuple[int, int]:
        """(h, w) a reduced-scale decode must at least have to serve ``view``."""
        scale = required_scale([view])
        return (
            min(height, int(np.ceil(height * scale)) + 1),
            min(width, int(np.ceil(width * scale)) + 1),
        )

    def load(
        self, index: int, draw: SampleDraw | None = None, *, draw_seed: int | None = None
    ) -> dict[str, Any]:
        """Build one sample without the skip policy (errors propagate).

        ``draw`` fixes the views (benchmarks, parity checks); by default it is drawn, from
        ``draw_seed`` when given (training with ``SeededShuffle``), else from torch's RNG.
        """
        rec = self.records[index]
        rng = self._rng(index, draw_seed)
        if draw is None:
            draw = self.sampler.draw(rec.height, rec.width, rng)
        # Each view is cut from the smallest JPEG decode that serves that view alone, so a view's
        # pixels do not depend on which other views the model asks for: the full view of
        # CropFormer (full + crops) and of Mask2Former (full only) are identical (paired runs).
        decoded: dict[tuple[int, int], tuple[Image.Image, tuple[int, int]]] = {}
        views = []
        for v in draw.views:
            need = self._decode_size(rec.height, rec.width, v) if self.jpeg_draft else (0, 0)
            if need not in decoded:
                image, full = open_image(
                    rec.image_path,
                    min_size=need if self.jpeg_draft else None,
                    expected_size=(rec.height, rec.width),
                    draft=self.jpeg_draft,
                )
                if draw.flip:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                decoded[need] = (image, full)
            image, full = decoded[need]
            views.append(render_image_view(image, full, v))
        if self.pixel_transform is not None and self.sampler.train:
            views = self.pixel_transform(views, int(rng.integers(2**31 - 1)))
        sample: dict[str, Any] = {
            "views": [to_chw_tensor(v) for v in views],
            "boxes": torch.tensor([v.box for v in draw.views], dtype=torch.float32),
            "orig_size": (rec.height, rec.width),
            "image_id": rec.image_id,
            "file_name": rec.file_name,
        }
        if self.with_targets:
            ents = rec.non_crowd()
            labels = group = None
            if self.target_classes is not None:
                where = f"{rec.source or 'annotations'}: image {rec.file_name}"
                ents, labels, group = self.target_classes.select(ents, where=where)
            source = label_source_for(rec, ents)
            maps = [render_label_view(source, v, flip=draw.flip) for v in draw.views]
            K = len(ents)
            if group is not None and labels is not None:
                # semantic targets: one per class present; entity k -> its class group
                lut = np.append(group, -1).astype(np.int32)  # index -1 (no entity) stays -1
                maps = [lut[m] for m in maps]
                labels = group_labels(labels, group)
                K = int(labels.size)
            if labels is not None:
                sample["labels"] = torch.from_numpy(labels)
            lm_dtype = torch.int16 if K < 32000 else torch.int32
            sample["label_maps"] = [torch.from_numpy(m).to(lm_dtype) for m in maps]
            sample["num_entities"] = K
            valid = np.zeros((K, len(maps)), dtype=bool)
            for t, m in enumerate(maps):
                present = np.bincount(m.ravel() + 1, minlength=K + 1)[1:] > 0
                valid[:, t] = present
            sample["valid"] = torch.from_numpy(valid)
        return sample
