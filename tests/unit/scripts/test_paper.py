"""``make paper`` driver: the job list, resuming, paired statistics, portable records, README."""

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
    monkeypatch.setattr(module, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(module, "README", tmp_path / "README.md")
    monkeypatch.setattr(module, "REPO", tmp_path)
    return module


def _record(paper: ModuleType, name: str, ap: float, split: str = "test", **metrics: float) -> None:
    job = next(j for j in paper.jobs() if j.name == name)
    if job.script == "train.py":  # train records carry both splits
        m = {"test_entity_ap": ap, "val_entity_ap": ap - 0.5}
        m.update({f"test_{k}": v for k, v in metrics.items()})
    else:
        m = {"split": split, "entity_ap": ap, **metrics}
    rec = {
        "job": name,
        "table": job.table,
        "command": f"python {job.script} " + " ".join(job.overrides),
        "info": job.info,
        "metrics": m,
        "checkpoint": None,
        "minutes": 1.0,
    }
    paper.write_record(name, rec)


def test_jobs_are_unique_paired_and_evals_name_a_training_job(paper: ModuleType) -> None:
    jobs = paper.jobs()
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))
    train_names = {j.name for j in jobs if j.script == "train.py"}
    for j in jobs:
        if j.script == "eval.py":
            assert j.ckpt_of in train_names
            assert "split=test" in j.overrides  # reported numbers come from the test split
    assert len(paper.SEEDS) >= 8
    t5 = [j for j in jobs if j.table == "table5"]
    assert len(t5) == 4 * len(paper.SEEDS)  # two models + two controls per seed
    for s in paper.SEEDS:
        cf = next(j for j in t5 if j.name == f"t5_cropformer_s{s}")
        m2f = next(j for j in t5 if j.name == f"t5_mask2former_s{s}")
        assert cf.overrides[1:] == m2f.overrides[1:] == [f"seed={s}"]
        comp = next(j for j in t5 if j.name == f"t5_m2f_compute_s{s}")
        assert comp.overrides[:2] == m2f.overrides and "trainer.max_steps=400" in comp.overrides
    for table in ("table8b", "lh"):  # the same paired seeds as table5
        assert {j.info["seed"] for j in jobs if j.table == table} == set(paper.SEEDS)
    for table in ("table9a", "table9b"):
        assert len({j.info["seed"] for j in jobs if j.table == table}) >= 3


def test_finished_jobs_are_skipped_and_missing_ones_run_in_order(
    paper: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paper, "record_benchmark_sizes", lambda python: None)
    _record(paper, "t5_cropformer_s1", 40.0)
    ran: list[str] = []

    def fake_run(job, python, lowres):  # noqa: ANN001
        ran.append(job.name)
        _record(paper, job.name, 38.0)

    monkeypatch.setattr(paper, "run_job", fake_run)
    args = ["--tables", "table5", "--seeds", "1", "2", "--results", str(paper.RESULTS),
            "--logs", str(paper.LOGS)]  # fmt: skip
    assert paper.main(args) == 0
    assert "t5_cropformer_s1" not in ran
    assert ran == [  # seed by seed: a seed's evaluations run before the next seed trains
        "t5_mask2former_s1",
        "t5_m2f_compute_s1",
        "t5_m2f_tta_s1",
        "t5_cropformer_s2",
        "t5_mask2former_s2",
        "t5_m2f_compute_s2",
        "t5_m2f_tta_s2",
    ]
    ran.clear()
    assert paper.main(args) == 0
    assert ran == []  # everything done: nothing runs again


def test_table5_gives_paired_intervals_and_verdicts(paper: ModuleType) -> None:
    paper.SEEDS = (1, 2, 3, 4)
    gains = (2.0, 3.0, 1.0, 2.5)
    for s, g in zip(paper.SEEDS, gains):
        _record(paper, f"t5_cropformer_s{s}", 40.0 + s + g, entity_ap_m=10.0)
        _record(paper, f"t5_mask2former_s{s}", 40.0 + s, entity_ap_m=10.0 + s % 2)
    text = paper.render_table5()
    assert text is not None
    row = next(
        line for line in text.splitlines() if "CropFormer - Mask2Former, AP^e (test)" in line
    )
    # mean 2.125, sd 0.854, t(3) interval [0.76, 3.48]: excludes 0
    assert "+2.12 ± 0.85 (95 % CI [+0.77, +3.48]" in row and "established (> 0)" in row
    am = next(line for line in text.splitlines() if "AP_m (test)" in line)
    assert "not established at this scale" in am  # differences 0, -1, 0, -1 -> CI includes 0
    ctrl = next(line for line in text.splitlines() if "400 steps (test)" in line)
    assert "not run yet" in ctrl
    tta = next(line for line in text.splitlines() if "5 views merged (test)" in line)
    assert "not run yet" in tta
    for s, g in zip(paper.SEEDS, gains):  # the merged baseline beats CropFormer on every seed
        _record(paper, f"t5_m2f_tta_s{s}", 40.0 + s + g + 1.0 + 0.1 * s)
    text = paper.render_table5()
    assert text is not None
    tta = next(
        line for line in text.splitlines() if "CropFormer - Mask2Former 5 views merged" in line
    )
    assert "reversed: established (< 0), against the claim" in tta
    assert "python train.py experiment=embedded_cropformer seed=1" in text


def test_readme_block_is_generated_from_the_records_and_checked(paper: ModuleType) -> None:
    paper.SEEDS = (1, 2, 3)
    for s, g in zip(paper.SEEDS, (0.5, -0.4, 0.2)):
        _record(paper, f"t5_cropformer_s{s}", 10.0 + g)
        _record(paper, f"t5_mask2former_s{s}", 10.0)
    paper.README.write_text(f"# x\n\n{paper.BEGIN}\nold\n{paper.END}\n\ntail\n")
    assert paper.sync_readme(check=True) is False
    paper.render()
    text = paper.README.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\ntail\n")
    headline = next(line for line in text.splitlines() if "the headline" in line)
    assert "+0.10" in headline and "not established at this scale" in headline
    grouped = next(line for line in text.splitlines() if "**Not established" in line)
    assert "the headline" in grouped  # the words follow the verdicts
    assert "**Established**" in text and "**Reversed**" in text
    assert paper.sync_readme(check=True) is True
    _record(paper, "t5_cropformer_s3", 12.0)  # a record changes: the README is stale
    assert paper.sync_readme(check=True) is False


def test_records_are_portable(paper: ModuleType) -> None:
    ckpt = paper.LOGS / "t5_cropformer_s1" / "checkpoints" / "last.ckpt"
    paper.write_record(
        "t5_cropformer_s1",
        {
            "job": "t5_cropformer_s1",
            "checkpoint": str(ckpt),
            "metrics": {"run_dir": str(ckpt.parent)},
            "command": f"python eval.py ckpt={ckpt} split=test",
        },
    )
    text = (paper.RUNS / "t5_cropformer_s1.json").read_text()
    assert str(paper.LOGS) not in text
    rec = json.loads(text)
    assert rec["checkpoint"] == "<logs>/t5_cropformer_s1/checkpoints/last.ckpt"
    assert paper.local_path(rec["checkpoint"]) == ckpt
    assert rec["command"] == f"python eval.py ckpt={rec['checkpoint']} split=test"


def test_a_data_root_outside_the_repository_is_written_as_data(
    paper: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path.parent / f"{tmp_path.name}_data"  # DATA_ROOT outside the checkout
    monkeypatch.setenv("DATA_ROOT", str(data))
    lowres = data / "synthetic" / "key_L320"
    paper.write_record(
        "lh_cropformer_L_s1",
        {"job": "lh_cropformer_L_s1", "command": f"python eval.py data.image_root={lowres}"},
    )
    rec = json.loads((paper.RUNS / "lh_cropformer_L_s1.json").read_text())
    assert rec["command"] == "python eval.py data.image_root=<data>/synthetic/key_L320"
    assert paper.local_path("<data>/synthetic/key_L320") == lowres


def test_crop_ratio_table_has_seeds_and_error_bars(paper: ModuleType) -> None:
    paper.SWEEP_SEEDS = (1, 2)
    for s in (1, 2):
        _record(paper, f"t5_cropformer_s{s}", 30.0)  # another session's run: not in the sweep
        _record(paper, f"t5_mask2former_s{s}", 40.0)
        for r, ap in ((0.5, 38.0), (0.6, 40.0), (0.7, 41.0), (0.8, 40.5)):
            _record(paper, f"t9a_ratio{r}_s{s}", ap + s)
    assert "table9a" in paper.render()
    text = (paper.RESULTS / "table9a.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[3].strip() for row in rows] == [
        "39.50 ± 0.71",
        "41.50 ± 0.71",
        "42.50 ± 0.71",
        "42.00 ± 0.71",
    ]
    assert (paper.RESULTS / "table9a_crop_ratio.png").stat().st_size > 1000


def test_import_main_job_records_its_seed_and_refuses_other_overrides(
    paper: ModuleType, tmp_path: Path
) -> None:
    job = tmp_path / "main_job"
    for model, ap in (("cropformer", 12.0), ("mask2former", 9.0)):
        run = job / model
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"test_entity_ap": ap, "minutes": 7.0}))
        (run / "config.yaml").write_text("seed: 3\n")
    summary = {"overrides": ["seed=3"], "minutes": 15.0}
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


def test_size_mix_and_low_resolution_copy_run_on_tiny_data(
    paper: ModuleType, tmp_path: Path
) -> None:
    """The two helper subprocesses of ``make paper`` (real code paths, tiny synthetic data)."""
    paper.EXTRA_OVERRIDES = [
        "data.synthetic.num_train=2",
        "data.synthetic.num_val=1",
        "data.synthetic.num_test=2",
        "data.synthetic.image_size=[160,120]",
        "data.test_short_side=64",
        "data.test_max_size=96",
        f"paths.data_dir={tmp_path}/data",
    ]
    paper.REPO = SCRIPT.parents[1]  # the subprocesses run in the repository
    paper.record_benchmark_sizes(sys.executable)
    sizes = json.loads((paper.RUNS / "benchmark_sizes.json").read_text())
    assert sizes["images"] == 2 and sizes["entities"] > 0
    assert sizes["small"] + sizes["medium"] + sizes["large"] == pytest.approx(100.0)
    low = paper.make_lowres(sys.executable)
    assert low.name.endswith("_L64")
    data = json.loads((low / "test.json").read_text())
    assert len(data["images"]) == 2 and all(
        min(i["height"], i["width"]) == 64 for i in data["images"]
    )


def test_a_missing_checkpoint_is_retrained_and_must_reproduce_its_record(
    paper: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _record(paper, "t5_mask2former_s1", 8.42)  # its checkpoint is not on this machine
    ckpt = tmp_path / "retrained" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    rec = json.loads((paper.RUNS / "t5_mask2former_s1.json").read_text())
    retrained = {"test_entity_ap": 8.42, "val_entity_ap": 7.92, "last_checkpoint": str(ckpt)}
    monkeypatch.setattr(
        paper, "_execute", lambda job, python, lowres: (dict(retrained), ckpt.parent, [], 0.0)
    )
    tta = next(j for j in paper.jobs() if j.name == "t5_m2f_tta_s1")
    assert rec["metrics"]["val_entity_ap"] == 7.92
    assert paper._checkpoint_of("t5_mask2former_s1", tta, "python") == ckpt
    retrained["test_entity_ap"] = 8.40  # not what the record says: refuse, say what to do
    with pytest.raises(
        RuntimeError, match="not reproducible.*delete results/runs/t5_mask2former_s1"
    ):
        paper._checkpoint_of("t5_mask2former_s1", tta, "python")


def test_table10b_starts_from_the_class_aware_stage1_and_says_so_when_missing(
    paper: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [j for j in paper.jobs() if j.table == "table10b"]
    assert {j.info["seed"] for j in jobs} == set(paper.SEEDS)
    for s in paper.SEEDS:  # the pair differs only in the model preset
        cf, m2f = (next(j for j in jobs if j.name == f"t10b_{m}_s{s}") for m in
                   ("cropformer", "mask2former"))  # fmt: skip
        assert cf.overrides[1:] == m2f.overrides[1:]
        assert "task=panoptic" in cf.overrides
        assert any(o.startswith("model.init_checkpoint=") and paper.CLASS_PRETRAIN in o
                   for o in cf.overrides)  # fmt: skip
    for job in paper.jobs():  # every override formats with the placeholders _execute fills
        for o in job.overrides:
            assert "{" not in o.format(lowres="L", repo="R"), o
    assert f"model.init_checkpoint=R/{paper.CLASS_PRETRAIN}" in [
        o.format(lowres="L", repo="R") for o in jobs[0].overrides
    ]
    ran: list[str] = []
    monkeypatch.setattr(paper, "record_benchmark_sizes", lambda python: None)
    monkeypatch.setattr(paper, "run_job", lambda job, python, lowres: ran.append(job.name))
    args = ["--tables", "table10b", "--results", str(paper.RESULTS), "--logs", str(paper.LOGS)]
    assert paper.main(args) == 2  # REPO is tmp_path: no stage-1 file there
    err = capsys.readouterr().err
    assert paper.CLASS_PRETRAIN in err and "task=panoptic" in err and ran == []


def test_a_seed_whose_two_records_come_from_two_host_kinds_is_left_out(paper: ModuleType) -> None:
    def prov(
        name: str,
        capability: str | None,
        cpu_id: str | None = None,
        started: str = "2026-12-08T01:00:00+00:00",
    ) -> None:
        path = paper.RUNS / f"{name}.json"
        rec = json.loads(path.read_text())
        hardware = {"cpu": "AMD EPYC", "gpu": None}
        if capability is not None:
            hardware["cpu_capability"] = capability
        if cpu_id is not None:
            hardware["cpu_id"] = cpu_id
        rec["provenance"] = {"started": started, "hardware": hardware}
        path.write_text(json.dumps(rec))

    paper.SEEDS = (1, 2, 3, 4, 5, 6)
    for s in paper.SEEDS:
        _record(paper, f"t5_cropformer_s{s}", 42.0 + s * 0.1)
        _record(paper, f"t5_mask2former_s{s}", 40.0)
    prov("t5_cropformer_s1", "AVX512", "25/17/1")
    prov("t5_mask2former_s1", "AVX512")  # no id (older record): the capability decides
    prov("t5_cropformer_s2", "AVX2")
    prov("t5_mask2former_s2", "AVX512")
    # a record from before the fields existed: its session's host, unlike any other host
    prov("t5_cropformer_s3", None, started="2026-12-07T16:21:11+00:00")
    prov("t5_mask2former_s3", "AVX512", "25/17/1")
    prov("t5_cropformer_s5", "AVX512", "25/17/1")
    prov("t5_mask2former_s5", "AVX512", "25/1/0")
    prov("t5_cropformer_s6", None, started="2026-12-07T17:00:00+00:00")
    prov("t5_mask2former_s6", None, started="2026-12-07T18:00:00+00:00")
    # seed 4: no provenance at all, the kind is unknown and the pair is kept
    c = paper.compare(
        "x", paper._name("t5_cropformer_s{}"), paper._name("t5_mask2former_s{}"), paper.SEEDS
    )
    assert c.seeds == [1, 4, 6]
    assert [m[0] for m in c.mixed] == [2, 3, 5]
    assert (
        "left out, records from two host kinds: seed 2: AVX2 vs AVX512; "
        "3: AVX512 (host of 2026-12-07) vs AVX512 (25/17/1); 5: AVX512 (25/17/1) vs "
        "AVX512 (25/1/0)" in c.text()
    )
