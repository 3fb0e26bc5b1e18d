"""Reading run directories: csv metrics, metrics.json, multirun job tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cropformer.run.records import (
    collect,
    metric_series,
    metrics_csv,
    sweep_table,
    swept_keys,
    to_markdown,
)
from cropformer.utils.errors import UserError

CSV = """epoch,lr-AdamW/head,step,train/loss,val/entity_ap
,5e-06,0,,
0,,0,9.5,
,1e-05,1,,
0,,1,8.25,
0,,1,,12.5
"""


def _run(tmp_path, name="run", version=0, text=CSV):
    d = tmp_path / name / "csv" / f"version_{version}"
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text(text)
    return tmp_path / name


def test_metric_series_skips_empty_cells(tmp_path):
    run = _run(tmp_path)
    series = metric_series(run)
    assert set(series) == {"lr-AdamW/head", "train/loss", "val/entity_ap"}
    steps, values = series["train/loss"]
    assert steps.tolist() == [0, 1] and values.tolist() == [9.5, 8.25]
    assert series["val/entity_ap"][0].tolist() == [1] and series["val/entity_ap"][1][0] == 12.5
    assert metric_series(metrics_csv(run)).keys() == series.keys()  # the file itself works too


def test_metrics_csv_newest_version_and_clear_error(tmp_path):
    run = _run(tmp_path)
    (run / "csv" / "version_10").mkdir()
    (run / "csv" / "version_10" / "metrics.csv").write_text("step,x\n3,1.0\n")
    (run / "csv" / "version_2").mkdir()
    (run / "csv" / "version_2" / "metrics.csv").write_text("step,x\n2,1.0\n")
    assert metrics_csv(run).parent.name == "version_10"  # numeric, not lexical
    with pytest.raises(UserError, match="no csv/version_"):
        metrics_csv(tmp_path / "empty")


def _job(sweep, n, overrides, metrics=None, failed=False):
    job = sweep / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if failed:
        (job / "FAILED.txt").write_text("boom")
    return job


def test_sweep_rows_table_and_markdown(tmp_path):
    sweep = tmp_path / "multirun"
    _job(sweep, 10, ["data.crop.ratio=0.8", "trainer.max_steps=4"], {"entity_ap": 3.0})
    _job(
        sweep,
        0,
        ["data.crop.ratio=0.5", "trainer.max_steps=4"],
        {"entity_ap": 1.0, "val_entity_ap_s": 2},
    )
    _job(sweep, 2, ["data.crop.ratio=0.7", "trainer.max_steps=4"], failed=True)
    (sweep / "not_a_job").mkdir()
    rows = collect(sweep)
    assert [r["job"] for r in rows] == [0, 2, 10]  # numeric order
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert swept_keys(rows) == ["data.crop.ratio"]  # max_steps is the same in every job
    table = sweep_table(rows, ["entity_ap", "val/entity_ap_s"])
    assert [t["data.crop.ratio"] for t in table] == [0.5, 0.7, 0.8]
    assert isinstance(table[0]["data.crop.ratio"], float)
    assert table[0]["val/entity_ap_s"] == 2.0 and math.isnan(table[2]["val/entity_ap_s"])
    assert math.isnan(table[1]["entity_ap"]) and table[2]["entity_ap"] == 3.0
    with pytest.raises(ValueError, match="unknown metric"):
        sweep_table(rows, ["no_such_metric"])
    md = to_markdown(rows, ["entity_ap"]).splitlines()
    assert md[0] == "| job | data.crop.ratio | trainer.max_steps | entity_ap | status |"
    assert md[2] == "| 0 | 0.5 | 4 | 1.00 | ok |" and md[3].endswith("| - | failed |")
    short = to_markdown(rows, ["entity_ap"], keys=swept_keys(rows), labels={"entity_ap": "AP"})
    assert short.splitlines()[0] == "| job | data.crop.ratio | AP | status |"


def test_one_job_sweep_keeps_all_keys_and_errors(tmp_path):
    sweep = tmp_path / "one"
    _job(sweep, 0, ["+x=1", "y=[1,2]"], {"entity_ap": 1.0})
    rows = collect(sweep)
    assert swept_keys(rows) == ["x", "y"]
    assert sweep_table(rows, [])[0]["y"] == [1, 2]
    with pytest.raises(FileNotFoundError, match="not a directory"):
        collect(tmp_path / "missing")
    (tmp_path / "nojobs").mkdir()
    with pytest.raises(FileNotFoundError, match="no job folders"):
        collect(tmp_path / "nojobs")
    assert np.isfinite(sweep_table(rows, ["entity_ap"])[0]["entity_ap"])
