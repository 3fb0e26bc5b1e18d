"""Atomic checkpoint writes and overlay colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropformer.training.callbacks import AtomicCheckpointIO, colorize, make_progress_bar


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


def test_progress_bar_mode_validation():
    assert type(make_progress_bar(mode="plain")).__name__ == "PlainProgress"
    assert type(make_progress_bar(mode="rich")).__name__ == "RichProgressBar"
    with pytest.raises(ValueError, match="auto, rich or plain"):
        make_progress_bar(mode="fancy")
