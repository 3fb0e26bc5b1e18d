"""Shared fixtures: environment for offline CPU runs, composed configs, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()
os.environ.setdefault("PROJECT_ROOT", str(REPO_ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the checkout (docs, reference bundle, small real images)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"needs the shared folder at {SHARED_DIR} (it sits next to the checkout in CI)")
    return SHARED_DIR


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed every test and keep torch to the CI machine's core count."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
