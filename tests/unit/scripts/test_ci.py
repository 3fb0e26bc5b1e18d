"""CI says what it checks: .ci/run's steps and times, pinned tools, a global test timeout."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _fake_make(tmp_path: Path, failing: str) -> Path:
    """A ``make`` that records the target it was asked for and fails for ``failing``."""
    shim = tmp_path / "bin"
    shim.mkdir()
    make = shim / "make"
    make.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$1" >> {tmp_path}/targets\n'
        f'[ "$1" = "{failing}" ] && exit 3\n'
        "exit 0\n"
    )
    make.chmod(0o755)
    return shim


@pytest.mark.parametrize("failing", ["none", "typecheck"])
def test_ci_runs_lint_typecheck_and_tests_and_prints_each_time(tmp_path, failing):
    shim = _fake_make(tmp_path, failing)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    targets = (tmp_path / "targets").read_text().split()
    assert targets == ["setup", "lint", "typecheck", "test"]  # a failure stops nothing
    summary = result.stdout.split("::: summary\n", 1)[1].splitlines()
    assert [line.split()[0] for line in summary] == ["setup", "lint", "typecheck", "tests"]
    assert all(re.search(r"\d+ min \d\d s$", line) for line in summary)
    if failing == "none":
        assert result.returncode == 0 and all(" passed " in line for line in summary)
    else:
        assert result.returncode == 1
        assert "FAILED (exit 3)" in next(line for line in summary if line.startswith("typecheck"))


def test_dev_tools_are_pinned_and_tests_have_a_global_timeout():
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for tool in ("ruff", "mypy", "pytest", "pytest-timeout", "PyYAML"):
        assert tool in pins, f"constraints.txt does not pin {tool}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"  # typing.NotRequired in schema.py
    assert any(d.lower().startswith("pyyaml") for d in project["project"]["dependencies"])
    assert int(project["tool"]["pytest"]["ini_options"]["timeout"]) > 0
