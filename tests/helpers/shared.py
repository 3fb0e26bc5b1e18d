"""Files from ``../shared`` (parity bundles, key lists, real annotations) that a test needs.

A missing file fails the test with one line naming it, like the conftest's session check for the
folders; it skips only when ``CROPFORMER_ALLOW_MISSING_SHARED=1`` says so explicitly. Without
this, a renamed or deleted bundle file would silently turn its parity test into a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ALLOW_MISSING_SHARED = "CROPFORMER_ALLOW_MISSING_SHARED"


def require_shared(path: Path) -> Path:
    """``path`` if it exists; else fail (or skip when missing shared files are allowed)."""
    if path.exists():
        return path
    message = f"{path} is missing: this test reads it from ../shared beside the checkout"
    if os.environ.get(ALLOW_MISSING_SHARED, "") not in ("", "0"):
        pytest.skip(f"{message} ({ALLOW_MISSING_SHARED} is set)")
    pytest.fail(f"{message}; set {ALLOW_MISSING_SHARED}=1 to skip instead", pytrace=False)
