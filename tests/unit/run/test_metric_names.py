"""One metric vocabulary: sweep tables accept the printed names and reject unknown ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cropformer.evaluation.metric import METRIC_KEYS
from cropformer.run.metric_names import METRICS, canonical, lookup

REPO = Path(__file__).resolve().parents[3]


def _summarize():
    spec = importlib.util.spec_from_file_location(
        "summarize_sweep", REPO / "scripts" / "summarize_sweep.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vocabulary_covers_the_evaluation_keys():
    assert set(METRIC_KEYS.values()) <= set(METRICS)


@pytest.mark.parametrize("name", ["entity_ap50", "val/entity_ap50", "val_entity_ap50"])
def test_spellings_have_one_canonical_name(name):
    assert canonical(name) == "val/entity_ap50"


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'entity_apx'; known: val/entity_ap, "):
        canonical("entity_apx")


def test_lookup_reads_train_and_eval_metrics_files():
    train = {"entity_ap": 1.0, "val_entity_ap": 1.0, "val_entity_ap50": 2.0, "minutes": 3.0}
    evaluation = {"entity_ap": 4.0, "entity_ap50": 5.0, "split": "val"}
    assert lookup(train, "val/entity_ap50") == 2.0 and lookup(train, "minutes") == 3.0
    assert lookup(evaluation, "val/entity_ap50") == 5.0
    assert lookup(evaluation, "test/entity_ap50") is None


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    for job, ap50 in ((0, 12.5), (1, 17.25)):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(
            f"- data.crop.ratio={0.5 + job / 10}\n"
        )
        metrics = {"entity_ap": 1.0, "val_entity_ap": 1.0, "val_entity_ap50": ap50, "minutes": 1}
        (sweep / str(job) / "metrics.json").write_text(json.dumps(metrics))
    return sweep


@pytest.mark.parametrize("name", ["entity_ap50", "val/entity_ap50", "val_entity_ap50"])
def test_summarize_sweep_shows_the_metric_under_any_spelling(tmp_path, capsys, name):
    # issue 17 case 4: `--metric entity_ap50` and `val/entity_ap50` showed `-` in every row
    sweep = _sweep(tmp_path)
    assert _summarize().main([str(sweep), "--metric", name]) == 0
    out = capsys.readouterr().out
    assert "val/entity_ap50" in out and "12.50" in out and "17.25" in out


def test_summarize_sweep_rejects_an_unknown_metric(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    assert _summarize().main([str(sweep), "--metric", "entity_ap_50"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'entity_ap_50'" in err and "val/entity_ap50" in err
