"""``make paper`` driver: the job list, resuming (finished jobs skipped) and the rendered tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "paper.py"


@pytest.fixture
def paper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "RUNS", tmp_path / "results" / "runs")
    return module


def _record(paper: ModuleType, name: str, ap: float, **metrics: float) -> None:
    job = next(j for j in paper.jobs() if j.name == name)
    paper.RUNS.mkdir(parents=True, exist_ok=True)
    rec = {
        "job": name,
        "table": job.table,
        "command": f"python {job.script} " + " ".join(job.overrides),
        "info": job.info,
        "metrics": {"val_entity_ap": ap, **{f"val_{k}": v for k, v in metrics.items()}},
        "checkpoint": None,
        "minutes": 1.0,
    }
    (paper.RUNS / f"{name}.json").write_text(json.dumps(rec))


def test_jobs_are_unique_and_evals_name_a_training_job(paper: ModuleType) -> None:
    jobs = paper.jobs()
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))
    train_names = {j.name for j in jobs if j.script == "train.py"}
    for j in jobs:
        if j.script == "eval.py":
            assert j.ckpt_of in train_names
    t5 = [j for j in jobs if j.table == "table5"]
    assert len(t5) == 2 * len(paper.SEEDS)
    # equal budget: the two models of a seed differ only by the experiment preset
    for s in paper.SEEDS:
        cf = next(j for j in t5 if j.name == f"t5_cropformer_s{s}")
        m2f = next(j for j in t5 if j.name == f"t5_mask2former_s{s}")
        assert cf.overrides[1:] == m2f.overrides[1:] == [f"seed={s}"]


def test_finished_jobs_are_skipped_and_missing_ones_run_in_order(
    paper: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(paper, "t5_cropformer_s1", 40.0)
    ran: list[str] = []

    def fake_run(job, python, lowres):  # noqa: ANN001
        ran.append(job.name)
        _record(paper, job.name, 38.0)

    monkeypatch.setattr(paper, "run_job", fake_run)
    args = ["--tables", "table5", "--results", str(paper.RESULTS), "--logs", str(paper.LOGS)]
    assert paper.main(args) == 0
    assert "t5_cropformer_s1" not in ran
    assert ran == [
        "t5_mask2former_s1",
        "t5_cropformer_s2",
        "t5_mask2former_s2",
        "t5_cropformer_s3",
        "t5_mask2former_s3",
    ]
    ran.clear()
    assert paper.main(args) == 0
    assert ran == []  # everything done: nothing runs again


def test_table5_reports_mean_sd_and_gain(paper: ModuleType) -> None:
    for s, (a, b) in zip(paper.SEEDS, ((42.0, 40.0), (44.0, 41.0), (43.0, 42.0))):
        _record(paper, f"t5_cropformer_s{s}", a, entity_ap_m=10.0 + s)
        _record(paper, f"t5_mask2former_s{s}", b, entity_ap_m=9.0)
    text = paper.render_table5()
    assert text is not None
    gain_row = next(line for line in text.splitlines() if line.startswith("| **gain**"))
    assert "2.0 ± 1.0" in gain_row  # gains 2, 3, 1
    assert "43.0 ± 1.0" in text  # CropFormer mean ± sd
    assert "python train.py experiment=embedded_cropformer seed=1" in text


def test_crop_ratio_table_and_plot(paper: ModuleType) -> None:
    _record(paper, "t5_cropformer_s1", 41.0)
    _record(paper, "t5_mask2former_s1", 40.0)
    for r, ap in ((0.5, 38.0), (0.6, 40.0), (0.8, 40.5)):
        _record(paper, f"t9a_ratio{r}_s1", ap)
    assert "table9a" in paper.render()
    text = (paper.RESULTS / "table9a.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[2].strip() for row in rows] == ["38.0", "40.0", "41.0", "40.5"]
    assert (paper.RESULTS / "table9a_crop_ratio.png").stat().st_size > 1000


def test_import_main_job_records_its_seed_and_refuses_other_overrides(
    paper: ModuleType, tmp_path: Path
) -> None:
    job = tmp_path / "main_job"
    runs = {}
    for model, ap in (("cropformer", 12.0), ("mask2former", 9.0)):
        run = job / model
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"val_entity_ap": ap, "minutes": 7.0}))
        (run / "config.yaml").write_text("seed: 3\n")
        runs[model] = str(run)
    summary = {"overrides": ["seed=3"], "runs": runs, "minutes": 15.0}
    (job / "summary.json").write_text(json.dumps(summary))
    assert paper.import_main_job(job) == ["t5_cropformer_s3", "t5_mask2former_s3"]
    rec = json.loads((paper.RUNS / "t5_cropformer_s3.json").read_text())
    assert rec["command"] == "python train.py experiment=embedded_cropformer seed=3"
    assert paper.metric(rec, "entity_ap") == 12.0 and rec["main_job_minutes"] == 15.0
    # overrides that restate the presets' values or only move files are table5 runs too
    summary["overrides"] = ["seed=3", "trainer.max_steps=200", "paths.log_dir=/elsewhere"]
    (job / "summary.json").write_text(json.dumps(summary))
    assert paper.import_main_job(job) == ["t5_cropformer_s3", "t5_mask2former_s3"]
    for changed in ("trainer.max_steps=10", "data.crop.ratio=0.5", "no_such_key=1"):
        summary["overrides"] = ["seed=3", changed]
        (job / "summary.json").write_text(json.dumps(summary))
        with pytest.raises(SystemExit, match="not a table5 run"):
            paper.import_main_job(job)
