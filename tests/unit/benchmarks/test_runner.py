"""Benchmark runner: row selection, row schema and the results writer (no measurement)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import run_all  # noqa: E402


def test_select_default_aliases_and_errors() -> None:
    assert run_all.select(None) == list(run_all.ROWS)
    assert run_all.select("3b,1") == ["1", "3"]
    assert run_all.select("3c") == ["3"]
    with pytest.raises(SystemExit, match="unknown row"):
        run_all.select("9")


def test_every_row_module_exists() -> None:
    for name in [*run_all.ROWS.values(), "gpu_models"]:
        assert (BENCH / f"{name}.py").is_file(), name


def _row(**kw):
    base = dict(
        reference="ref 2.00 s",
        ours="1.00 s",
        ratio=2.0,
        target=">= 1.2x",
        met=True,
        inputs="512x512",
    )
    base.update(kw)
    return common.make_row("2", "network | inference", **base)


def test_row_has_all_keys_and_rounds_ratio() -> None:
    r = _row(ratio=1.23456, ours_s=1.0)
    assert set(common.ROW_KEYS) <= set(r)
    assert r["ratio"] == 1.235 and r["ours_s"] == 1.0 and r["threads"] == 2


def test_write_results_md_and_json(tmp_path: Path) -> None:
    rows = [_row(), _row(met=False, ratio=None, note="OOM at 16 GB")]
    md = common.write_results(rows, tmp_path / "out", "make bench")
    text = md.read_text()
    assert (
        "| row | what | reference | ours | ratio | target | met | in run | statistic | inputs "
        "| measured |" in text
    )
    assert "network / inference" in text  # pipes escaped out of cells
    assert "2.00x" in text and "**no**" in text and "OOM at 16 GB" in text
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["command"] == "make bench" and len(data["rows"]) == 2
    assert data["rows"][1]["met"] is False


def test_write_results_rejects_incomplete_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks keys"):
        common.write_results([{"row": "1"}], tmp_path, "x")


def test_formatters() -> None:
    assert common.fmt_s(0.0123) == "12.3 ms" and common.fmt_s(12.3) == "12.30 s"
    assert common.fmt_gb(None) == "-" and common.fmt_gb(1.234) == "1.23 GB"
    assert common.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not common.is_oom(ValueError("bad shape"))


def test_diagnosis_only_on_missed_targets() -> None:
    import diagnosis

    diagnosis.DIAGNOSES[("2", "network")] = "profile says X"
    try:
        missed = diagnosis.annotate(_row(met=False))
        met = diagnosis.annotate(_row(met=True))
    finally:
        del diagnosis.DIAGNOSES[("2", "network")]
    assert missed["diagnosis"].endswith("profile says X") and "diagnosis" not in met
    text = common.render_markdown([missed], "make bench")
    assert "Why the target is missed:** (From an earlier profile" in text


def test_partial_run_keeps_other_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [_row(), dict(_row(), row="3b", what="inference")]
    common.write_results(old, tmp_path, "make bench")

    class Fake:
        @staticmethod
        def run(quick: bool, device: str):
            return [dict(_row(), row="3c", what="training step")]

    monkeypatch.setitem(sys.modules, "row3_cropformer", Fake)
    monkeypatch.setattr(common, "versions", lambda: "test")  # importing torch etc. is slow
    assert run_all.main(["--only", "3c", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert [(r["row"], r["what"]) for r in data["rows"]] == [
        ("2", "network | inference"),
        ("3c", "training step"),
    ]
    assert (
        data["rows"][1]["produced_by"] == 'make bench ARGS="--only 3c --out ' + str(tmp_path) + '"'
    )


def test_explanations_shared_by_rows_are_written_once() -> None:
    shared = (
        "Reference = the official code's figures, measured elsewhere on another machine and torch."
    )
    rows = [
        dict(_row(note=f"Row one only. {shared}"), versions="torch 9"),
        dict(_row(note=f"{shared} Row two only."), row="3", what="training", versions="torch 9"),
    ]
    text = common.render_markdown(rows, "make bench")
    assert text.count(shared) == 1
    notes = text.split("## Notes", 1)[1].split("## Explanations shared by several rows", 1)
    assert notes[0].count("See E1.") == 2 and "Row one only." in notes[0]
    assert notes[1].strip().startswith(f"- **E1**: {shared}")
    assert text.count("torch 9") == 1  # the same versions: written once
