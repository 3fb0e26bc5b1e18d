"""Benchmark reporting: ``met`` = target AND check, ``in_run`` flags, ratio labels (no measurement).

Each row module's ``run`` is driven with a fake ``run_isolated`` returning fixed figures, so the
labelling rules of issue 15 are checked without timing anything.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import diagnosis  # noqa: E402
import row1_data  # noqa: E402
import row2_network  # noqa: E402
import row3_cropformer  # noqa: E402
import row4_fusion  # noqa: E402
import row5_eval  # noqa: E402
import row6_msda  # noqa: E402
import run_all  # noqa: E402

NO_BF16 = {"cpu": "AMD EPYC", "cores": 2, "torch_cpu_capability": "AVX2", "bf16_units": False}
BF16 = {"cpu": "AMD EPYC", "cores": 2, "torch_cpu_capability": "AVX512", "bf16_units": True}


@pytest.fixture(autouse=True)
def _machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "MACHINE", NO_BF16)
    monkeypatch.setattr(common, "VERSIONS", "test")


def _row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        reference="ref 2.00 s", ours="1.00 s", ratio=2.0, target=">= 1.2x", inputs="x"
    )
    base.update(kw)
    return common.make_row("2", "network", **base)


@pytest.mark.parametrize(
    ("meets", "check", "met"),
    [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (True, None, True),
        (None, True, None),
        (None, False, None),
    ],
)
def test_met_is_target_and_check(meets: bool | None, check: bool | None, met: bool | None) -> None:
    assert common.decide_met(meets, check) is met
    r = _row(meets_target=meets, check_passed=check)
    assert r["met"] is met and r["meets_target"] is meets and r["check_passed"] is check


def test_old_met_spelling_is_the_target_part() -> None:
    r = _row(met=True, check_passed=False)
    assert r["meets_target"] is True and r["met"] is False


def test_write_results_rejects_a_typed_met(tmp_path: Path) -> None:
    r = _row(meets_target=True, check_passed=False, in_run=True, statistic="min of 3")
    r["met"] = True  # typed over the computed verdict
    with pytest.raises(ValueError, match="met is not target AND check"):
        common.write_results([r], tmp_path, "x")


def test_ratio_cells_and_in_run_column(tmp_path: Path) -> None:
    assert common.fmt_ratio(None) == "-"
    assert common.fmt_ratio(3.2912, "lower") == ">= 3.29x"
    assert common.fmt_ratio(2.0) == "2.00x"
    rows = [
        _row(in_run=True, statistic="median of 5", ratio_vs_anchors=3.5),
        _row(in_run=False, reference_source="anchors", statistic="single run", ratio=None),
        _row(in_run=True, statistic="single run", ratio=3.29, ratio_bound="lower"),
    ]
    text = common.write_results(rows, tmp_path, "make bench").read_text()
    assert "| 2.00x (vs anchors: 3.50x) |" in text
    assert "| anchors | single run | x |" in text and "| >= 3.29x |" in text
    assert "WITHOUT bf16 units" in text and "AVX2" in text  # machine legend
    assert "in one run on the same input" not in text


def test_machine_text_and_info() -> None:
    assert "with bf16 units" in common.machine_text(BF16)
    assert "WITHOUT bf16 units" in common.machine_text(NO_BF16)
    assert common.machine_text(None) == "not recorded"
    info = common.machine_info()
    assert set(info) == {"cpu", "cores", "torch_cpu_capability", "bf16_units"}


def test_diagnosis_is_marked_as_an_earlier_profile() -> None:
    r = diagnosis.annotate(
        common.make_row(
            "3c",
            "Training step X",
            reference="-",
            ours="-",
            ratio=1.0,
            target="t",
            inputs="-",
            meets_target=False,
        )
    )
    assert r["diagnosis"].startswith("(From an earlier profile, 2026-11-25")


def _fake(results: dict[str, Any]) -> Any:
    def run_isolated(module: str, func: str, kwargs: dict[str, Any] | None = None, **_: Any):
        out = results[func]
        return dict(out(kwargs or {}) if callable(out) else out)

    return run_isolated


def test_row6_uses_the_stated_target(monkeypatch: pytest.MonkeyPatch) -> None:
    case = {
        "fwd_ours_s": 1.02, "fwd_ref_s": 1.0, "fwd_rel_diff": 1e-6,
        "train_ours_s": 0.5, "train_ref_s": 1.0, "train_rel_diffs": [1e-6] * 4,
        "saved_ours_mb": 1.0, "saved_ref_mb": 2.0, "queries": 10,
    }  # fmt: skip
    monkeypatch.setattr(
        row6_msda, "run_isolated", _fake({"measure": {"full": case, "train": case}})
    )
    train, fwd = row6_msda.run()
    assert train["met"] is True and train["in_run"] is True
    # 0.98x passed the old >= 0.95 rule; the stated target is >= 1.0x
    assert fwd["ratio"] == pytest.approx(0.98, abs=1e-3) and fwd["met"] is False


def test_row4_lower_bound_and_equality(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(kw: dict[str, Any]) -> dict[str, Any]:
        if kw["impl"] == "official":
            return {"oom": True, "error": "MemoryError", "wall_s": 3.0}
        return {"time_s": 10.0, "peak_rss_gb": 4.0, "extra_gb": 1.2, "baseline_rss_gb": 2.8}

    results = {
        "check_equal": {"id_equal": True, "order_equal": True, "score_diff": 1e-7},
        "measure": measure,
    }
    monkeypatch.setattr(row4_fusion, "run_isolated", _fake(results))
    rows = row4_fusion.run()
    assert [r["ratio"] for r in rows] == [4.0, 4.0]  # 16 GB cap / 4 GB, not the estimate
    assert all(r["ratio_bound"] == "lower" and r["met"] is True for r in rows)
    assert rows[0]["extra_goal_met"] is True and "goal <= 1.5 GB: met" in rows[0]["note"]
    assert rows[0]["reference_estimate_gb"] == pytest.approx(69.1, abs=0.1)
    results["check_equal"] = {"id_equal": False, "order_equal": True, "score_diff": 0.0}
    assert all(r["met"] is False for r in row4_fusion.run())


def test_row5_met_needs_identical_ap(monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(kw: dict[str, Any]) -> dict[str, Any]:
        t = 1.0 if kw["impl"] == "ours" else 10.0
        ap = 5.0 if kw["impl"] == "ours" else results["ap"]
        return {
            "time_s": t, "encode_s": t / 2, "eval_s": t / 2, "AP": ap, "AP50": 1.0,
            "AP75": 1.0, "peak_rss_gb": 1.0,
        }  # fmt: skip

    results: dict[str, Any] = {"measure": measure, "ap": 5.0}
    monkeypatch.setattr(row5_eval, "run_isolated", _fake(results))
    (row,) = row5_eval.run()
    assert row["met"] is True and "C++ COCOeval" in row["reference"]
    assert row["reference_encode_s"] == 5.0 and row["ours_eval_s"] == 0.5
    results["ap"] = 5.1
    assert row5_eval.run()[0]["met"] is False


def _train(kw: dict[str, Any]) -> dict[str, Any]:
    terms = 60 if "crop" in kw["name"] else 30
    t = 4.0 if kw.get("factored") else 5.0
    losses = {f"loss_{i}": 1.0 + i for i in range(terms)}
    return {
        "time_s": t, "times_s": [t], "loss_terms": terms, "peak_rss_gb": 3.0,
        "first_losses": losses, "phases_s": [1.0, 2.0, t - 3.0],
    }  # fmt: skip


ROW3 = {
    "train_step": _train,
    "infer_image": lambda kw: {
        "time_s": 20.0,
        "net_s": 18.0,
        "outputs": 100,
        "non_empty": 20,
        "id_map_shape": [kw["height"], kw["width"]],
        "peak_rss_gb": 2.5,
    },  # fmt: skip
    "infer_net": lambda kw: {"time_s": 4.0 * kw["views"]},
}


def test_row3_bf16_has_no_ratio_and_anchor_rows_are_not_in_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "MACHINE", BF16)
    monkeypatch.setattr(row3_cropformer, "run_isolated", _fake(ROW3))
    rows = row3_cropformer.run(quick=True)
    bf16 = [r for r in rows if r["row"] == "3c" and "bf16" in r["what"]]
    assert len(bf16) == 2 and all(r["ratio"] is None and r["met"] is None for r in bf16)
    fp32 = [
        r for r in rows if r["row"] == "3c" and "bf16" not in r["what"] and " vs " not in r["what"]
    ]
    assert all(r["in_run"] is False and r["reference_source"] == "anchors" for r in fp32)
    assert all(r["ratio"] is not None and "torch 2.13.0" in r["note"] for r in fp32)
    big = next(r for r in rows if r["row"] == "3b" and "3072x2048" in r["what"])
    assert big["ratio_bound"] == "lower" and big["ratio"] == pytest.approx(20.0 / 2.5)
    views = next(r for r in rows if "5-view" in r["what"])
    assert views["cropformer_s"] == 20.0 and views["mask2former_s"] == 4.0  # same statistic


def test_row3_skips_bf16_without_bf16_units(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    def train(kw: dict[str, Any]) -> dict[str, Any]:
        asked.append(kw)
        return _train(kw)

    monkeypatch.setattr(row3_cropformer, "run_isolated", _fake({**ROW3, "train_step": train}))
    rows = row3_cropformer.run(quick=True)
    assert not any(kw["bf16"] for kw in asked)
    note = next(r for r in rows if r["row"] == "3c" and r["ours"] == "not measured")
    assert "no bf16 units" in note["note"] and note["met"] is None


def test_row2_met_needs_equal_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    diff = {"value": 1e-4}

    def measure(kw: dict[str, Any]) -> dict[str, Any]:
        ours = kw["impl"] == "ours"
        out: dict[str, Any] = {
            "params": 47e6, "peak_rss_gb": 2.0, "growth_gb": 0.5,
            "fp32_s": 1.0 if ours else 1.5, "fp32_times": [1.0, 1.1],
            "fp32_result": "(1, 100, 128, 128)" if kw["mode"] == "infer" else "30",
            "fp32_loss": 40.0,
        }  # fmt: skip
        if not ours and kw["mode"] == "infer":
            out.update(
                max_diff_logits=1e-5, max_diff_masks=diff["value"], max_abs_logits=3.0,
                max_abs_masks=4.0,
            )  # fmt: skip
        return out

    monkeypatch.setattr(row2_network, "run_isolated", _fake({"measure": measure}))
    rows = row2_network.run(quick=True)
    infer = [r for r in rows if "inference (forward)" in r["what"]]
    train = [r for r in rows if "training step (" in r["what"]]
    assert all(r["met"] is True and r["check_passed"] is True for r in infer)
    assert train[0]["check_passed"] is None and "No numerical check" in train[0]["check"]
    assert any("bf16" in r["what"] and r["ours"] == "not measured" for r in rows)
    diff["value"] = 0.1  # > 1e-3 x 4.0
    infer = [r for r in row2_network.run(quick=True) if "inference (forward)" in r["what"]]
    assert all(r["met"] is False and "DIFFERENT" in r["check"] for r in infer)


def test_row1_target_holds_in_run_and_vs_anchors(monkeypatch: pytest.MonkeyPatch) -> None:
    views = {"max": 3.0, "mean": 0.4, "within2": 0.99}

    def measure(kw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"train_masks_compared": 80, "eval_masks_compared": 40}
        for mode in ("train", "eval"):
            out[f"{mode}_ref_s"], out[f"{mode}_ref_times"] = 3.0, [3.0]
            for key in ("ours", "full"):
                out[f"{mode}_{key}_s"] = 0.3  # 10x in run; eval vs anchors 1.409 / 0.3 = 4.7x
                out[f"{mode}_{key}_times"] = [0.3]
                out[f"{mode}_{key}_masks_equal"] = True
                out[f"{mode}_{key}_views"] = views
        return out

    monkeypatch.setattr(row1_data, "run_isolated", _fake({"measure": measure}))
    rows = row1_data.run(quick=True, sizes="small")
    main = {r["what"]: r for r in rows if "jpeg_draft" not in r["what"]}
    train = main["Data, training sample (full + 1 crop), 4000x3000"]
    evals = main["Data, evaluation sample (full + 4 crops), 4000x3000"]
    assert train["met"] is True and train["ratio_vs_anchors"] == pytest.approx(1.625 / 0.3, 1e-3)
    assert evals["ratio"] == pytest.approx(10.0) and evals["met"] is False
    full = [r for r in rows if "jpeg_draft" in r["what"]]
    assert len(full) == 2 and all(r["met"] is None for r in full)
    assert "view pixels vs the reference" in train["check"]


def test_legacy_rows_are_relabelled_not_remeasured() -> None:
    old = {
        "row": "4", "what": "Fusion 4500x3000", "reference": "OOM", "ours": "15 s, 4.86 GB",
        "ratio": 14.2, "target": ">= 3x", "met": True, "inputs": "-", "threads": 2,
        "device": "cpu", "versions": "v", "date": "2026-11-25 15:13 UTC",
        "check": "id maps equal", "note": "", "reference_oom": True, "ours_peak_gb": 4.86,
    }  # fmt: skip
    r = run_all.upgrade_legacy(dict(old))
    assert r["ratio"] == pytest.approx(16 / 4.86, abs=1e-3) and r["ratio_bound"] == "lower"
    assert r["in_run"] is True and r["legacy"] and "not recorded" in r["machine"]
    assert r["date"] == old["date"] and r["met"] is True
    bf16 = run_all.upgrade_legacy(dict(old, row="3c", what="Training step bf16", ratio=2.16))
    assert bf16["ratio"] is None and bf16["met"] is None and bf16["in_run"] is False
    six = run_all.upgrade_legacy(dict(old, row="6", what="core", ratio=0.97, reference="x"))
    assert six["met"] is False


def test_row3_factored_vs_full_is_in_run_and_checks_the_losses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def train(kw: dict[str, Any]) -> dict[str, Any]:
        r = _train(kw)
        if kw.get("factored") and kw.get("lean") and "crop" in kw["name"]:
            r["first_losses"] = {**r["first_losses"], "loss_0": 1.01}  # 1 % off: must fail
        return r

    monkeypatch.setattr(row3_cropformer, "run_isolated", _fake({**ROW3, "train_step": train}))
    rows = row3_cropformer.run(quick=True)
    pairs = [r for r in rows if "factored vs full" in r["what"]]
    assert len(pairs) == 4 and all(r["in_run"] is True for r in pairs)
    assert all(r["ratio"] == pytest.approx(5.0 / 4.0) for r in pairs)
    bad = [r for r in pairs if r["check_passed"] is False]
    assert len(bad) == 1 and "CropFormer" in bad[0]["what"] and "checkpointing" in bad[0]["what"]
    anchors = [r for r in rows if r["row"] == "3c" and "factored mask logits" in r["what"]]
    assert anchors and all("AVX2" in r["note"] for r in anchors)  # cross-CPU ratio said
    assert all("forward 1.00 s, losses and matching 2.00 s" in r["note"] for r in anchors)


def test_sync_readme_copies_the_results_table(tmp_path: Path) -> None:
    md = tmp_path / "results.md"
    md.write_text("# B\n\ntext\n\n| row | what |\n|---|---|\n| 1 | new |\n\n| other | table |\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{common.README_START}\n| row | what |\n|---|---|\n| 1 | old |\n"
        f"{common.README_END}\nafter\n"
    )
    assert common.sync_readme(md, readme)
    text = readme.read_text()
    assert "| 1 | new |" in text and "old" not in text and "other" not in text
    assert text.startswith("intro\n") and text.endswith("after\n")
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not common.sync_readme(md, plain) and plain.read_text() == "no markers\n"
