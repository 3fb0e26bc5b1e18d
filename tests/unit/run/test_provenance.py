"""Run provenance: the dirty flag names changed code, not the results and prose runs write."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cropformer.run.provenance import git_state


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    for rel in ("src/m.py", "conf/a.yaml", "README.md", "docs/d.md", "results/table.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def test_results_and_prose_do_not_make_a_checkout_dirty(repo: Path) -> None:
    assert git_state(repo)["dirty"] is False
    for rel in ("README.md", "docs/d.md", "results/table.md", "results/runs/new.json"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("v2\n")
    state = git_state(repo)
    assert state["dirty"] is False and len(state["commit"]) == 40


@pytest.mark.parametrize("rel", ["src/m.py", "conf/a.yaml"])
def test_a_changed_code_or_config_file_makes_it_dirty(repo: Path, rel: str) -> None:
    (repo / rel).write_text("v2\n")
    assert git_state(repo)["dirty"] is True


def test_no_repository_gives_none(tmp_path: Path) -> None:
    assert git_state(tmp_path / "nowhere") == {"commit": None, "dirty": None}
