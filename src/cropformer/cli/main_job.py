"""``make train``: the paper's claim on the embedded benchmark, in one command.

Fine-tunes CropFormer-tiny and its Mask2Former-tiny baseline from the same pre-trained
Mask2Former weights with the same budget and the same data seed (``experiment=embedded_cropformer``
and ``experiment=embedded_mask2former``: paired runs, the same images, order and view draws),
evaluates both on the held-out test scenes (the validation scenes alongside), and prints one
JSON line: ``entity_ap`` (CropFormer, test), ``baseline_entity_ap`` (Mask2Former, test),
``gain``, ``val_gain``, ``run_dir``, ``minutes``. ``summary.json`` holds every metric of both
runs and both runs' provenance. Extra command-line overrides apply to both runs, e.g.
``python -m cropformer.cli.main_job seed=2`` or ``trainer.max_steps=100``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from cropformer.run import provenance
from cropformer.run.boundary import record_failure_line, user_errors_exit
from cropformer.run.config import compose_config
from cropformer.run.metric_names import METRICS
from cropformer.utils.atomic import write_json
from cropformer.utils.errors import UserError

# (name in the summary, experiment preset); CropFormer first: its number is the headline.
RUNS = (("cropformer", "embedded_cropformer"), ("mask2former", "embedded_mask2former"))
# metrics compared between the two runs (keys of train()'s summary), test split first
_METRICS = tuple(m for m in METRICS if m not in ("entity_ar100_50", "entity_num_images"))
COMPARED = tuple(f"{split}_{m}" for split in ("test", "val") for m in _METRICS)


def _job_dir(overrides: list[str]) -> Path:
    """``<log_dir>/main_job/runs/<date>_<time>`` (``paths.log_dir`` may be overridden)."""
    cfg = compose_config([*overrides, "paths.output_dir=."])
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S") + f"_{time.time_ns() // 1000 % 10**6:06d}"
    return Path(str(cfg.paths.log_dir)).resolve() / "main_job" / "runs" / stamp


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (what a user types)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _ap(summary: dict[str, Any], split: str) -> float:
    value = summary.get(f"{split}_entity_ap")
    return float(value) if value is not None else math.nan


def _gain(a: float, b: float) -> float | None:
    return round(a - b, 4) if math.isfinite(a - b) else None


def compare(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Side-by-side metrics and CropFormer - Mask2Former gains (AP points)."""
    cf, m2f = summaries["cropformer"], summaries["mask2former"]
    table: dict[str, dict[str, float | None]] = {}
    for key in COMPARED:
        a, b = cf.get(key), m2f.get(key)
        gain = None if a is None or b is None else round(float(a) - float(b), 4)
        table[key] = {"cropformer": a, "mask2former": b, "gain": gain}
    return table


def main_job(overrides: list[str]) -> dict[str, Any]:
    """Run both fine-tunings and evaluations; returns the summary written to ``summary.json``."""
    from cropformer.cli.train import train

    started = time.time()
    job_dir = _job_dir(overrides)
    summaries: dict[str, dict[str, Any]] = {}
    for name, experiment in RUNS:
        print(f"[main job] {name}: python train.py experiment={experiment} " + " ".join(overrides))
        cfg = compose_config(
            [f"experiment={experiment}", *overrides, f"paths.output_dir={job_dir / name}"]
        )
        try:
            summaries[name] = train(cfg)
        except Exception as err:  # the boundary prints the line; the run folder keeps it too
            record_failure_line(cfg, err)
            raise
    cf, m2f = summaries["cropformer"], summaries["mask2former"]
    result = {
        "split": "test",
        "entity_ap": _ap(cf, "test"),
        "baseline_entity_ap": _ap(m2f, "test"),
        "gain": _gain(_ap(cf, "test"), _ap(m2f, "test")),
        "val_gain": _gain(_ap(cf, "val"), _ap(m2f, "val")),
        "run_dir": _shown_path(job_dir),
        "minutes": round((time.time() - started) / 60.0, 2),
    }
    table = compare(summaries)
    roots = provenance.path_roots(cfg)
    summary = {
        **result,
        "run_dir": provenance.relative_path(job_dir, roots),
        "overrides": provenance.relativize_overrides(overrides, roots),
        "metrics": table,
        "runs": {
            k: provenance.relative_path(str(v.get("run_dir")), roots) for k, v in summaries.items()
        },
        "provenance": {k: v.get("provenance") for k, v in summaries.items()},
    }
    write_json(job_dir / "summary.json", summary)
    _print_table(table)
    # rounded for reading; summary.json keeps full precision
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(shown), flush=True)
    return summary


def _print_table(metrics: dict[str, dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{float(v):.2f}"

    print(f"\n{'metric':<18}{'CropFormer':>12}{'Mask2Former':>13}{'gain':>8}")
    for key, row in metrics.items():
        name = key.replace("_entity_", " ").replace("_boundary_", " boundary_")
        print(
            f"{name:<18}{fmt(row['cropformer']):>12}{fmt(row['mask2former']):>13}"
            f"{fmt(row['gain']):>8}"
        )


def check_overrides(overrides: list[str]) -> None:
    """Unknown keys and bad values of either run: one UserError before any work."""
    from cropformer.cli.validate import command_line_error
    from cropformer.run.config import find_conf_dir

    for o in overrides:
        if o.lstrip("+~").startswith(("experiment=", "model=", "data/crop=")):
            raise UserError(
                f"{o}: the main job fixes the experiment of each run; use train.py for other models"
            )
    for _, experiment in RUNS:
        message = command_line_error(
            "train", [f"experiment={experiment}", *overrides], conf_dir=find_conf_dir()
        )
        if message:
            raise UserError(message.replace("train.py", "make train / cropformer.cli.main_job"))


@user_errors_exit
def _run(overrides: list[str]) -> dict[str, Any]:
    check_overrides(overrides)
    return main_job(overrides)


def main(argv: list[str] | None = None) -> None:
    """``python -m cropformer.cli.main_job [overrides...]``."""
    _run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
