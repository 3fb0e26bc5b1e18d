"""Atomic checkpoint writes, overlay panels and their labels, progress lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropformer.evaluation.writers import colorize, overlay
from cropformer.training.checkpointing import AtomicCheckpointIO
from cropformer.training.overlays import _panel
from cropformer.training.progress import (
    RichProgressWithLog,
    _StepRate,
    make_progress_bar,
    validation_line,
)


def test_atomic_checkpoint_replaces_and_leaves_no_temp(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "ck" / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, target)
    io.save_checkpoint({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target)["a"], torch.zeros(2))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, target)
    assert torch.load(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_colorize_distinct_colours_for_many_entities():
    ids = np.arange(-1, 299).reshape(20, 15)
    rgb = colorize(ids)
    assert rgb.shape == (20, 15, 3)
    assert (rgb.reshape(-1, 3)[0] == 0).all()  # -1 is black
    colours = {tuple(c) for c in rgb.reshape(-1, 3)[1:]}
    assert len(colours) > 250  # no palette overflow / wrap-around at 133


def test_training_overlays_and_predict_colour_an_entity_alike():
    """One palette: entity k has the same colour in a training overlay and in predict.py's."""
    ids = np.full((8, 8), -1, dtype=np.int64)
    ids[:, 4:] = 2
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    pred = {
        "id_map": torch.from_numpy(ids).int(),
        "scores": torch.ones(3),
        "query_indices": torch.arange(3),
    }
    predict_side = overlay(image, pred, alpha=1.0)[:, 8:]  # alpha 1: the entity colour itself
    assert (predict_side[0, 5] == colorize(ids)[0, 5]).all() and colorize(ids)[0, 5].any()
    batch = {
        "view_sizes": torch.tensor([[8, 8]]),
        "images": torch.from_numpy(image).permute(2, 0, 1)[None].float(),
    }
    panel, labels = _panel(batch, 0, 1, pred)
    assert labels == ["image", "prediction"]
    blended = panel[14:, -8:]  # below the header strip, the prediction column
    expected = (colorize(ids)[0, 5].astype(np.float32) * 0.6).astype(np.uint8)  # black image
    assert (blended[0, 5] == expected).all()


def test_progress_bar_mode_validation():
    assert type(make_progress_bar(mode="plain")).__name__ == "PlainProgress"
    assert isinstance(make_progress_bar(mode="rich"), RichProgressWithLog)
    with pytest.raises(ValueError, match="auto, rich or plain"):
        make_progress_bar(mode="fancy")


def _batch(with_targets: bool) -> dict:
    h, w = 32, 48
    batch = {
        "images": torch.full((2, 3, h, w), 100.0),
        "view_sizes": torch.tensor([[h, w], [h, w]]),
        "boxes": torch.zeros(1, 2, 4),
        "image_ids": torch.tensor([7]),
    }
    if with_targets:
        masks = torch.zeros(2, 2, h, w, dtype=torch.bool)
        masks[0, 0, :, :10] = True
        batch["targets"] = [{"masks": masks}]
    return batch


@pytest.mark.parametrize("with_targets", [True, False])
def test_overlay_panel_labels_say_what_each_column_is(with_targets):
    # issue 17 case 6: labelled "image | ground truth | prediction" while the middle panel was
    # the raw image (data.eval_targets=false: the batches carry no targets)
    pred = {"id_map": torch.zeros(16, 24, dtype=torch.long)}
    panel, labels = _panel(_batch(with_targets), 0, 2, pred)
    columns = 3 if with_targets else 2
    expected = ["image", "ground truth", "prediction"] if with_targets else ["image", "prediction"]
    assert labels == expected
    assert panel.shape == (32 + 14, 48 * columns + 4 * (columns - 1), 3)
    header = panel[:14]
    assert (header < 128).any(), "the header strip has the column names drawn in it"


class _Trainer:
    def __init__(self, step: int, max_steps: int, metrics: dict | None = None) -> None:
        self.global_step, self.max_steps = step, max_steps
        self.callback_metrics = metrics or {}


def test_progress_line_has_step_loss_rate_and_eta(monkeypatch):
    import cropformer.training.progress as cb

    clock = iter([100.0, 100.0, 110.0])  # __init__, reset, line
    monkeypatch.setattr(cb.time, "time", lambda: next(clock))
    rate = _StepRate()
    rate.reset(0)
    line = rate.line(_Trainer(20, 100), {"train/loss": torch.tensor(12.3456)})
    assert line == "step 20/100 | loss 12.35 | 2.00 it/s | elapsed 0.2 min | ETA 0.7 min"


def test_validation_line_rounds_and_drops_the_step():
    metrics = {"val/entity_ap": torch.tensor(29.123456), "val/step": torch.tensor(900.0)}
    metrics["val/entity_num_images"] = torch.tensor(50.0)
    line = validation_line(_Trainer(900, 900, metrics))
    assert line == "validation at step 900: val/entity_ap 29.12 | val/entity_num_images 50"
