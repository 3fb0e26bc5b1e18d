"""Shared fixtures: environment for offline CPU runs, composed configs, the shared data folder.

A missing ``../shared`` (parity bundle, official key lists, real sample images) stops the run
with one line instead of silently skipping the parity evidence; set
``CROPFORMER_ALLOW_MISSING_SHARED=1`` to run without it (those tests then skip).
"""

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
ALLOW_MISSING_SHARED = "CROPFORMER_ALLOW_MISSING_SHARED"
# What the parity and real-data tests read from ../shared.
SHARED_REQUIRED = ("reference/parity", "reference/official_keys", "data")


def pytest_configure(config: pytest.Config) -> None:
    """Fail the session in one line when ../shared is missing, unless explicitly allowed."""
    if os.environ.get(ALLOW_MISSING_SHARED, "") not in ("", "0"):
        return
    missing = [p for p in SHARED_REQUIRED if not (SHARED_DIR / p).is_dir()]
    if missing:
        raise pytest.UsageError(
            f"{SHARED_DIR} lacks {', '.join(missing)}: the parity tests need ../shared beside "
            f"the checkout; set {ALLOW_MISSING_SHARED}=1 to skip them instead"
        )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the checkout (docs, reference bundle, small real images)."""
    from helpers.shared import require_shared

    return require_shared(SHARED_DIR)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed every test and keep torch to the CI machine's core count."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
