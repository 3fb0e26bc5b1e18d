"""LightningDataModule for entity segmentation (the only Lightning import of the data part)."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from cropformer.data.categories import CategorySet
from cropformer.data.collate import collate
from cropformer.data.dataset import EntityDataset
from cropformer.data.draw_order import SeededShuffle
from cropformer.data.formats.coco_panoptic import read_coco_panoptic
from cropformer.data.formats.entityseg import read_categories, read_entityseg
from cropformer.data.records import Record
from cropformer.data.synthetic import SyntheticSpec
from cropformer.data.synthetic_store import (
    class_annotations_path,
    ensure_class_annotations,
    prepare_synthetic,
)
from cropformer.data.target_classes import TargetClasses
from cropformer.data.transforms import build_pixel_transform
from cropformer.data.view_sampler import ViewSampler
from cropformer.data.views import (
    NUM_TRAIN_CROPS,
    OFFICIAL_TEST_VIEWS,
    TRAIN_MAX_SIZE,
    TRAIN_SHORT_SIDES,
)
from cropformer.utils.hardware import auto_num_workers, auto_pin_memory

log = logging.getLogger(__name__)

OFFICIAL_TRAIN_SHORT_SIDES = TRAIN_SHORT_SIDES
TASKS = ("entity", "instance", "panoptic", "semantic")
FORMATS = ("entityseg", "coco_panoptic")


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker (base_seed + worker_id); derive numpy/random from it so any
    # library drawing from them (albumentations) differs per worker yet replays under a seed.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _as_dict(node: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(k): v for k, v in (node or {}).items()}


class EntityDataModule(L.LightningDataModule):
    """Train/val/test loaders of EntitySeg-format data (any converted dataset).

    Args:
        image_root: folder the jsons' ``file_name`` are relative to.
        train_annotations, val_annotations, test_annotations: EntitySeg-format jsons.
        batch_size: GLOBAL images per training step, divided by the world size.
        eval_batch_size: images per device in val/test (official: 1).
        num_workers, pin_memory, persistent_workers: DataLoader settings.
        crop: ``{ratio, stride_ratio, num_train, num_test, mode, cover_gap}`` (``data/crop``
            group; ``cover_gap``: widen ratio-0.5 crops of odd sides, not official).
        train_short_sides, train_max_size: official {640..800} / 1333.
        test_short_side, test_max_size: official 800 / 1333.
        crop_max_size: long-side cap of crop views, train and test (official MAX_SIZE_TRAIN;
            None = ``train_max_size``).
        flip_prob: horizontal flip probability in training.
        lsj: None, or ``{image_size, min_scale, max_scale}`` for the Mask2Former LSJ baseline.
        pixel_transforms: albumentations pixel-level transforms for training (optional).
        filter_empty: drop training images without non-crowd entities (official).
        size_divisibility: padding multiple in collate.
        skip_bad_samples: skip unreadable samples with a warning instead of raising.
        jpeg_draft: reduced-scale JPEG decoding (see EntityDataset; parity flag).
        synthetic: generator parameters (``SyntheticSpec`` fields plus ``root``); when set, the
            data is generated in ``prepare_data`` and the four paths are derived from it.
        eval_targets: build ``targets`` in val/test batches too (only needed for a val loss; AP
            reads the GT json). Off saves the (K, T, H, W) expansion: ~1 GB per EntitySeg image
            with T = 5 views.
        seed: the data seed: training order, view draws, flips and pixel augmentation come from
            it alone (``SeededShuffle``), so two runs with one data seed see the same samples
            whatever their models draw from torch's RNG. The configs set it to the run's
            ``seed``; None draws one from OS entropy (logged).
        task: ``entity`` (default: class-agnostic targets) or a class-aware task (``instance``,
            ``panoptic``, ``semantic``: targets carry contiguous class labels, see
            ``TargetClasses``); set by the ``task`` config group.
        format: annotation format of the three jsons: ``entityseg`` (EntitySeg / COCO instance
            json, also EntityClass and custom data) or ``coco_panoptic`` (COCO / ADE20K panoptic
            json + PNG folder).
        panoptic_dirs: ``coco_panoptic`` only: the PNG folder of each split (``train``, ``val``,
            ``test``).
        image_dirs: sub-folder of ``image_root`` per split (e.g. ``train2017``); default none.
        categories: class set for class-aware tasks: a categories json (a list, or a json with a
            ``categories`` list); default: the ``categories`` of the split's annotation json.
        num_classes: the number of classes the model predicts (checked against the class set of
            class-aware tasks); None skips the check.
    """

    def __init__(
        self,
        *,
        image_root: str | None = None,
        train_annotations: str | None = None,
        val_annotations: str | None = None,
        test_annotations: str | None = None,
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        persistent_workers: bool = False,
        crop: Mapping[str, Any] | None = None,
        train_short_sides: Sequence[int] = OFFICIAL_TRAIN_SHORT_SIDES,
        train_max_size: int = TRAIN_MAX_SIZE,
        test_short_side: int = OFFICIAL_TEST_VIEWS.short_side,
        test_max_size: int = OFFICIAL_TEST_VIEWS.max_size,
        crop_max_size: int | None = None,
        flip_prob: float = 0.5,
        lsj: Mapping[str, float] | None = None,
        pixel_transforms: Sequence[Any] | None = None,
        filter_empty: bool = True,
        size_divisibility: int = 32,
        skip_bad_samples: bool = False,
        jpeg_draft: bool = True,
        synthetic: Mapping[str, Any] | None = None,
        eval_targets: bool = True,
        seed: int | None = 0,
        task: str = "entity",
        format: str = "entityseg",
        panoptic_dirs: Mapping[str, str] | None = None,
        image_dirs: Mapping[str, str] | None = None,
        categories: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        crop_d: dict[str, Any] = {
            "ratio": OFFICIAL_TEST_VIEWS.crop_ratio,
            "stride_ratio": OFFICIAL_TEST_VIEWS.stride_ratio,
            "num_train": NUM_TRAIN_CROPS,
            "num_test": OFFICIAL_TEST_VIEWS.num_crops,
            "mode": OFFICIAL_TEST_VIEWS.crop_mode,
            "cover_gap": False,
        }
        crop_d.update(_as_dict(crop))
        self.crop: dict[str, Any] = crop_d
        self.image_root = image_root
        self.train_annotations = train_annotations
        self.val_annotations = val_annotations
        self.test_annotations = test_annotations
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = auto_num_workers(num_workers)  # "auto": follows the CPU count
        self.pin_memory = auto_pin_memory(pin_memory)  # "auto": a CUDA device is visible
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.train_short_sides = tuple(int(s) for s in train_short_sides)
        self.train_max_size = int(train_max_size)
        self.test_short_side = int(test_short_side)
        self.test_max_size = int(test_max_size)
        self.crop_max_size = (
            int(crop_max_size) if crop_max_size is not None else self.train_max_size
        )
        self.flip_prob = float(flip_prob)
        self.lsj = {k: float(v) for k, v in _as_dict(lsj).items()} if lsj else None
        self.pixel_transforms = list(pixel_transforms) if pixel_transforms else None
        self.filter_empty = bool(filter_empty)
        self.size_divisibility = int(size_divisibility)
        self.skip_bad_samples = bool(skip_bad_samples)
        self.jpeg_draft = bool(jpeg_draft)
        if seed is None:
            entropy = np.random.SeedSequence().entropy
            assert isinstance(entropy, int)  # drawn from the OS: one int
            seed = entropy % 2**31
            log.info("data.seed=null: drawing the training order from data seed %d", seed)
        self.seed = int(seed)
        self.synthetic: dict[str, Any] | None = None
        if synthetic:
            self.synthetic = _as_dict(synthetic)
        self.eval_targets = bool(eval_targets)
        if task not in TASKS:
            raise ValueError(f"data.task={task!r} is not one of {TASKS}")
        if format not in FORMATS:
            raise ValueError(f"data.format={format!r} is not one of {FORMATS}")
        self.task = task
        self.format = format
        self.panoptic_dirs = _as_dict(panoptic_dirs)
        self.image_dirs = _as_dict(image_dirs)
        self.categories = categories
        self.num_classes = None if num_classes is None else int(num_classes)
        self._class_set: CategorySet | None = None
        self._gt_records: dict[str, list[Record]] = {}
        self.world_size = 1
        self.datasets: dict[str, EntityDataset] = {}

    # -- paths -----------------------------------------------------------------------------

    def _synthetic_spec(self) -> tuple[Path, SyntheticSpec]:
        assert self.synthetic is not None
        cfg = dict(self.synthetic)
        root = Path(str(cfg.pop("root", "data/synthetic")))
        for key in ("image_size", "num_stuff", "num_objects"):
            if key in cfg and cfg[key] is not None:
                cfg[key] = tuple(int(v) for v in cfg[key])
        for key in ("object_size", "texture_period"):
            if key in cfg and cfg[key] is not None:
                cfg[key] = tuple(float(v) for v in cfg[key])
        return root, SyntheticSpec(**cfg)

    def _resolve_synthetic_paths(self) -> None:
        if self.synthetic is None:
            return
        root, spec = self._synthetic_spec()
        folder = root / spec.key()
        self.image_root = self.image_root or str(folder)

        def split_json(name: str) -> str:
            # class-aware tasks read the same annotations with the generator's kinds as classes
            path = folder / f"{name}.json"
            return str(class_annotations_path(path) if self.task != "entity" else path)

        self.train_annotations = self.train_annotations or split_json("train")
        self.val_annotations = self.val_annotations or split_json("val")
        self.test_annotations = self.test_annotations or split_json("test")

    @property
    def val_annotation_file(self) -> str | None:
        """EntitySeg-format json of the validation split (GT for AP^e, crowd kept)."""
        self._resolve_synthetic_paths()
        return self.val_annotations

    @property
    def test_annotation_file(self) -> str | None:
        """EntitySeg-format json of the test split (GT for AP^e, crowd kept)."""
        self._resolve_synthetic_paths()
        return self.test_annotations

    @property
    def batch_size_per_device(self) -> int:
        """Global batch size divided by the world size."""
        if self.batch_size % self.world_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} (global) is not divisible by the world size "
                f"{self.world_size}; choose a multiple of the number of devices"
            )
        return self.batch_size // self.world_size

    # -- Lightning hooks -----------------------------------------------------------------

    def prepare_data(self) -> None:
        """Generate the synthetic dataset (rank 0 only; cached and atomic)."""
        if self.synthetic is not None:
            root, spec = self._synthetic_spec()
            folder = prepare_synthetic(root, spec)
            if self.task != "entity":
                ensure_class_annotations(folder, spec)
            self._resolve_synthetic_paths()

    def setup(self, stage: str | None = None, world_size: int | None = None) -> None:
        """Build the datasets of ``stage`` (fit / validate / test)."""
        if world_size is not None:
            self.world_size = int(world_size)
        elif self.trainer is not None:
            self.world_size = int(self.trainer.world_size)
        _ = self.batch_size_per_device  # fail early on an indivisible batch size
        self._resolve_synthetic_paths()
        if stage in (None, "fit"):
            self.datasets["train"] = self._build("train", self.train_annotations)
        if stage in (None, "fit", "validate") and self.val_annotations:
            self.datasets["val"] = self._build("val", self.val_annotations)
        if stage in (None, "test") and self.test_annotations:
            self.datasets["test"] = self._build("test", self.test_annotations)

    def _records(self, annotations: str | None, split: str) -> list[Record]:
        if not annotations:
            raise ValueError(f"data.{split}_annotations is not set; give an EntitySeg-format json")
        if self.image_root is None:
            raise ValueError("data.image_root is not set")
        root = Path(self.image_root) / self.image_dirs.get(split, "")
        if self.format == "coco_panoptic":
            png_dir = self.panoptic_dirs.get(split)
            if not png_dir:
                raise ValueError(
                    f"data.panoptic_dirs.{split} is not set: the PNG folder of the {split} split's "
                    "panoptic json"
                )
            return read_coco_panoptic(annotations, png_dir, root, categories=self.categories)
        return read_entityseg(annotations, root)

    @property
    def class_set(self) -> CategorySet:
        """The classes of a class-aware task (``categories`` file or the annotation json's)."""
        if self._class_set is None:
            self._resolve_synthetic_paths()
            source = self.categories or self.train_annotations or self.val_annotations
            if source is None:
                raise ValueError(
                    "class-aware tasks need classes: set data.categories or the annotation jsons"
                )
            self._class_set = read_categories(source)
            if self.num_classes is not None and self.num_classes != len(self._class_set):
                raise ValueError(
                    f"data.num_classes={self.num_classes} but {source} has "
                    f"{len(self._class_set)} categories; set data.num_classes (and the model's) "
                    "to the class count"
                )
        return self._class_set

    def target_classes(self) -> TargetClasses | None:
        """How entities become targets (None for the entity task)."""
        if self.task == "entity":
            return None
        return TargetClasses(self.class_set, self.task)

    def gt_records(self, stage: str) -> list[Record]:
        """The records of the ``val`` or ``test`` split, crowd included (class-aware metrics)."""
        if stage not in self._gt_records:
            self._resolve_synthetic_paths()
            ann = self.val_annotations if stage == "val" else self.test_annotations
            self._gt_records[stage] = self._records(ann, stage)
        return self._gt_records[stage]

    def sampler_for(self, split: str) -> ViewSampler:
        """The view draw of a split (train: random; others: fixed)."""
        mode = str(self.crop["mode"])
        if split == "train":
            return ViewSampler(
                train=True,
                short_sides=self.train_short_sides,
                max_size=self.train_max_size,
                crop_max_size=self.crop_max_size,
                crop_mode=mode,
                num_crops=int(self.crop["num_train"]),
                crop_ratio=float(self.crop["ratio"]),
                stride_ratio=float(self.crop["stride_ratio"]),
                cover_gap=bool(self.crop["cover_gap"]),
                flip_prob=self.flip_prob,
                lsj=self.lsj,
            )
        return ViewSampler(
            train=False,
            short_sides=(self.test_short_side,),
            max_size=self.test_max_size,
            crop_max_size=self.crop_max_size,
            crop_mode=mode,
            num_crops=int(self.crop["num_test"]),
            crop_ratio=float(self.crop["ratio"]),
            stride_ratio=float(self.crop["stride_ratio"]),
            cover_gap=bool(self.crop["cover_gap"]),
        )

    def _build(self, split: str, annotations: str | None) -> EntityDataset:
        records = self._records(annotations, "train" if split == "train" else split)
        if split == "train" and self.filter_empty:
            n = len(records)
            records = [r for r in records if r.non_crowd()]
            if len(records) < n:
                log.info("train: dropped %d images without entities", n - len(records))
            if not records:
                raise ValueError(f"{annotations}: no training image has a non-crowd entity")
        return EntityDataset(
            records,
            self.sampler_for(split),
            with_targets=split == "train" or self.eval_targets,
            skip_bad_samples=self.skip_bad_samples,
            jpeg_draft=self.jpeg_draft,
            seed=self.seed,
            pixel_transform=build_pixel_transform(self.pixel_transforms)
            if split == "train"
            else None,
            target_classes=self.target_classes(),
        )

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, split))
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=SeededShuffle(len(dataset), seed=self.seed) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=functools.partial(collate, size_divisibility=self.size_divisibility),
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
            # Drop the ragged last training batch, unless that would leave no batch at all.
            drop_last=shuffle and len(dataset) >= batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size_per_device, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
