"""What the repository states agrees with its records, and carries no machine's absolute path."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# an absolute path of a machine: a root folder such as work, home, tmp, root or Users, or C:\
ABSOLUTE = re.compile(
    r"(?<![\w.<>${}-])(/(?:work|home|tmp|root|Users|mnt|scratch|private|srv)/[\w.-]"
    r"|[A-Z]:\\\\[\w.-])"
)
BINARY = {".png", ".jpg", ".jpeg", ".pt", ".pth", ".ckpt", ".pkl", ".npz", ".npy", ".gz", ".zip"}
# files exempt from the rule (none: this file builds its examples from parts)
ALLOWED: set[str] = set()


def _tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    return [REPO / f for f in out if Path(f).suffix.lower() not in BINARY and f not in ALLOWED]


def test_no_committed_file_holds_an_absolute_machine_path():
    offenders = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if ABSOLUTE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:120]}")
    assert not offenders, "absolute machine paths committed:\n" + "\n".join(offenders[:20])


def test_the_pattern_catches_machine_paths_and_spares_portable_ones():
    # built from parts so that this file holds no machine path itself
    bad_paths = ['"' + "/" + "work/exp200/logs/x.ckpt" + '"', "run_dir: " + "/" + "home/me/runs"]
    for bad in (*bad_paths, "C:\\\\Users\\\\me"):
        assert ABSOLUTE.search(bad), bad
    for ok in ("<log_dir>/main_job/runs", "${paths.root_dir}/benchmarks", "a/tmp/b", "/dev/null"):
        assert not ABSOLUTE.search(ok), ok


def test_readme_results_block_agrees_with_the_records():
    spec = importlib.util.spec_from_file_location("paper_check", REPO / "scripts" / "paper.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert module.readme_target() is not None, "the README lost its paper-results markers"
        assert module.sync_readme(check=True), (
            "the README's generated results disagree with results/runs/*.json: run "
            "`python scripts/paper.py --render-only`"
        )
    finally:
        sys.modules.pop(spec.name, None)
