"""train.py's start-up lines: the CPU precision warning and the boundary's one-line errors."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from cropformer.cli import train as train_cli
from cropformer.run.boundary import EXIT_FAILED, EXIT_USER, error_line
from cropformer.utils.errors import UserError


def _trainer(precision: str) -> SimpleNamespace:
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), precision=precision
    )


@pytest.mark.parametrize(("asked", "runs"), [("16-mixed", "bf16-mixed"), ("bf16-mixed", None)])
def test_reduced_precision_on_a_cpu_without_the_units_is_one_warning(
    monkeypatch, caplog, asked, runs
):
    seen = []

    def fake_warning(precision: str) -> str:
        seen.append(precision)
        return f"precision={precision} on a CPU without bf16 units: emulated, slower"

    monkeypatch.setattr(train_cli, "cpu_precision_warning", fake_warning)
    cfg = OmegaConf.create({"trainer": {"precision": asked}})
    with caplog.at_level(logging.WARNING):
        train_cli.warn_cpu_precision(cfg, _trainer(runs or asked))  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert seen == [runs or asked] and len(lines) == 1
    assert f"trainer.precision={runs or asked} on a CPU without bf16 units" in lines[0]
    if runs:  # Lightning's silent 16 -> bf16 on CPU is named
        assert f"trainer.precision={asked} runs as {runs} on CPU" in lines[0]


def test_no_warning_with_the_units_or_in_fp32(monkeypatch, caplog):
    monkeypatch.setattr(train_cli, "cpu_precision_warning", lambda precision: None)
    cfg = OmegaConf.create({"trainer": {"precision": "32-true"}})
    with caplog.at_level(logging.WARNING):
        train_cli.warn_cpu_precision(cfg, _trainer("32-true"))  # type: ignore[arg-type]
    assert not caplog.records


def test_error_lines_name_the_config_key_of_a_failed_instantiation():
    from hydra.errors import InstantiationException

    try:
        try:
            raise TypeError("`devices` selected with `CPUAccelerator` should be an int > 0.")
        except TypeError as inner:
            raise InstantiationException(
                "Error in call to target 'lightning.pytorch.trainer.trainer.Trainer':\n"
                "TypeError(...)\nfull_key: trainer"
            ) from inner
    except InstantiationException as err:
        line, code = error_line(err)
    assert code == EXIT_USER and "\n" not in line
    assert line == (
        "cannot build `trainer` (TypeError): `devices` selected with `CPUAccelerator` should be "
        "an int > 0; check the trainer.* values"
    )
    assert error_line(UserError("data.x=1: bad\n  value")) == ("data.x=1: bad value", EXIT_USER)
    line, code = error_line(RuntimeError("CUDA error: out of memory"))
    assert (line, code) == ("RuntimeError: CUDA error: out of memory", EXIT_FAILED)
