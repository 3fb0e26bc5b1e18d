"""The test session stops with one line when ../shared is missing, unless explicitly allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.shared import require_shared

CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"


def _session(tmp_path: Path, allow: str | None) -> subprocess.CompletedProcess[str]:
    """Run pytest on a copy of tests/conftest.py and one trivial test under tmp_path/repo."""
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFTEST, tests / "conftest.py")
    (tests / "test_trivial.py").write_text("def test_ok():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k != "CROPFORMER_ALLOW_MISSING_SHARED"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the guard needs no plugin; starts faster
    if allow is not None:
        env["CROPFORMER_ALLOW_MISSING_SHARED"] = allow
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path / "repo",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_shared_fails_in_one_line(tmp_path: Path) -> None:
    res = _session(tmp_path, allow=None)
    assert res.returncode == 4, res.stdout + res.stderr  # pytest's usage-error exit code
    out = (res.stdout + res.stderr).strip().splitlines()
    hits = [line for line in out if "shared" in line]
    assert len(hits) == 1, out
    assert "CROPFORMER_ALLOW_MISSING_SHARED=1" in hits[0]
    assert "reference/parity" in hits[0]


def test_opt_out_runs_without_shared(tmp_path: Path) -> None:
    res = _session(tmp_path, allow="1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout


def test_present_shared_runs(tmp_path: Path) -> None:
    for sub in ("reference/parity", "reference/official_keys", "data"):
        (tmp_path / "shared" / sub).mkdir(parents=True)
    res = _session(tmp_path, allow=None)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout


def test_a_missing_shared_file_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.delenv("CROPFORMER_ALLOW_MISSING_SHARED", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"nope\.pth is missing.*=1 to skip"):
        require_shared(tmp_path / "nope.pth")
    monkeypatch.setenv("CROPFORMER_ALLOW_MISSING_SHARED", "1")
    with pytest.raises(pytest.skip.Exception, match="nope.pth is missing"):
        require_shared(tmp_path / "nope.pth")
    assert require_shared(tmp_path) == tmp_path
