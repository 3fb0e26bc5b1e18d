"""Fixtures shared by the integration modules: one tiny training run for the whole session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_run_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic data folder of :func:`tiny_run` (built by its first run)."""
    return tmp_path_factory.mktemp("tiny_data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_run_data: Path) -> tuple[Path, Any]:
    """One short fit (``TINY_RUN``: 4 steps, validated at step 4) shared by the modules that read
    it (test_train, test_eval_predict, test_checkpoints_travel): one training per session
    instead of one per module. Returns ``(tmp, summary)``; runs under ``tmp/logs``.

    A test that adds a training run beside it (``ckpt=last`` resumes) works in a copy of
    ``tmp/logs``, so that ``ckpt=last`` / ``ckpt=best`` keep finding this run everywhere.
    """
    from _integration_helpers import tiny_cfg

    from cropformer.cli.train import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    return tmp, train(tiny_cfg(tmp, data_dir=tiny_run_data))
