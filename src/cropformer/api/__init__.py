"""Python API: from a checkpoint (ours or an official detectron2 file) to entities.

    from cropformer import load_segmenter
    seg = load_segmenter("logs/train/runs/<run>/checkpoints/last.ckpt", device="cpu")
    entities = seg("photo.jpg")                 # or an (H, W, 3) array, a PIL image, or a list
    entities.id_map()                           # (H, W) int32: 0 = no entity, k + 1 = entity k
    seg.id_map(frames, images_per_batch=4)      # [H, W] maps in the output mode (official_demo ...)

``load_segmenter`` takes the test sizes, crops and fusion stored with the checkpoint (ours store
the data config they were trained with; an official file gets the official 800 / 1333, 4 corner
crops of 0.7, fusion B-OC), so it gives exactly what ``predict.py`` gives; keywords override them.
Every checkpoint is read by the one loader, ``loading.read_checkpoint`` (shared with
``eval.py`` and ``train.py``), which builds the network and the fusion from what the file
stores, without a LightningModule; ``predict.py`` runs ``Segmenter.predict_files``, the one
library path over many files.

The package sits on the top floor (it composes Hydra configs for official files):
``loading`` (checkpoint files -> configs + weights + ``CheckpointInfo``), ``settings`` (the
test-time settings a checkpoint carries, merged with overrides), ``entities`` (one image's result),
``segmenter`` (``Segmenter`` and ``load_segmenter``).
"""

from __future__ import annotations

from cropformer.api.entities import Entities
from cropformer.api.loading import (
    CheckpointInfo,
    LoadedCheckpoint,
    describe_settings,
    read_checkpoint,
)
from cropformer.api.segmenter import Segmenter, load_segmenter
from cropformer.api.settings import (
    OFFICIAL_TEST_SETTINGS,
    test_settings,
    views_from_data_config,
)
from cropformer.inference.output_modes import OutputMode

__all__ = [
    "OFFICIAL_TEST_SETTINGS",
    "CheckpointInfo",
    "Entities",
    "OutputMode",
    "Segmenter",
    "LoadedCheckpoint",
    "describe_settings",
    "read_checkpoint",
    "load_segmenter",
    "test_settings",
    "views_from_data_config",
]
