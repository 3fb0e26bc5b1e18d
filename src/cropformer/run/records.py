"""Read what training runs leave on disk: csv metrics, ``metrics.json``, multirun job tables.

A run directory (``logs/<task>/runs/<time>/``, or one job ``logs/<task>/multiruns/<time>/<n>/``)
holds ``csv/version_0/metrics.csv`` (the csv logger), ``metrics.json`` (the final summary) and,
for Hydra jobs, ``.hydra/overrides.yaml`` (the job's command-line overrides). Used by
``scripts/summarize_sweep.py`` and the notebooks; plain files, no Lightning or Hydra import.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cropformer.run.metric_names import canonical, lookup
from cropformer.utils.errors import UserError

__all__ = [
    "collect",
    "job_overrides",
    "metric_series",
    "metrics_csv",
    "swept_keys",
    "sweep_table",
    "to_markdown",
]


def _version(path: Path) -> int:
    suffix = path.parent.name.removeprefix("version_")
    return int(suffix) if suffix.isdigit() else -1


def metrics_csv(run_dir: str | Path) -> Path:
    """The csv logger's ``metrics.csv`` of a run directory (newest ``csv/version_*``), or the
    file itself when ``run_dir`` is one."""
    path = Path(run_dir).expanduser()
    if path.is_file():
        return path
    found = sorted(path.glob("csv/version_*/metrics.csv"), key=_version)
    if not found:
        raise UserError(
            f"{path}: no csv/version_*/metrics.csv; pass a run directory written with the csv "
            "logger (logger=csv or logger=wandb)"
        )
    return found[-1]


def metric_series(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every logged metric of a run as ``(steps, values)``, rows without a value skipped.

    Returns:
        ``{name: (steps (n,) int64, values (n,) float64)}``, e.g. ``train/loss``,
        ``val/entity_ap``, ``lr-AdamW/head``; steps from the csv's ``step`` column.
    """
    path = metrics_csv(run_dir)
    steps: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            step_text = row.get("step") or ""
            try:
                step = int(float(step_text))
            except ValueError:
                continue
            for key, text in row.items():
                if key in (None, "step", "epoch") or text in (None, ""):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                steps.setdefault(key, []).append(step)
                values.setdefault(key, []).append(value)
    return {
        k: (np.asarray(steps[k], dtype=np.int64), np.asarray(values[k], dtype=np.float64))
        for k in steps
    }


def job_overrides(job_dir: str | Path) -> dict[str, str]:
    """A Hydra job's command-line overrides (``.hydra/overrides.yaml``) as ``{key: value}``."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record per job directory (``<sweep_dir>/<job number>``), sorted by job number.

    Each record: ``job`` (int), ``dir``, ``status`` (``ok`` | ``failed`` | ``no metrics``),
    ``overrides`` (``{key: value}`` strings), ``metrics`` (the job's ``metrics.json``).
    """
    sweep_dir = Path(sweep_dir).expanduser()
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory (pass a Hydra multirun folder)")
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not jobs:
        raise FileNotFoundError(
            f"{sweep_dir} has no job folders (0/, 1/, ...): pass logs/<task>/multiruns/<time>"
        )
    rows = []
    for job in jobs:
        metrics_path = job / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        status = "failed" if (job / "FAILED.txt").is_file() else ("ok" if metrics else "no metrics")
        rows.append(
            {
                "job": int(job.name),
                "dir": str(job),
                "status": status,
                "overrides": job_overrides(job),
                "metrics": metrics,
            }
        )
    return rows


def swept_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The override keys whose value differs between jobs (all keys of a one-job sweep)."""
    keys = sorted({k for r in rows for k in r["overrides"]})
    if len(rows) < 2:
        return keys
    return [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]


def _parse(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def sweep_table(
    rows: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    keys: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Flat rows for tables and plots: ``job``, each swept key (parsed: ``0.7`` -> float), each
    metric under the name given (``val/entity_ap``; ``entity_ap`` and ``val_entity_ap`` work too,
    see ``run.metric_names``; NaN when the job has none), ``status``."""
    keys = swept_keys(rows) if keys is None else list(keys)
    table = []
    for r in rows:
        row: dict[str, Any] = {"job": r["job"]}
        for k in keys:
            row[k] = _parse(r["overrides"][k]) if k in r["overrides"] else None
        for m in metrics:
            v = lookup(r["metrics"], canonical(m))
            row[m] = float(v) if isinstance(v, (int, float)) else math.nan
        row["status"] = r["status"]
        table.append(row)
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return "-" if value is None else str(value)


def to_markdown(
    rows: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    keys: Sequence[str] | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """A markdown table of ``collect``'s rows: job, the override keys (default: all of them;
    e.g. ``swept_keys(rows)``), the metrics (names as in :func:`sweep_table`; headed by
    ``labels[metric]`` when given), status."""
    swept = sorted({k for r in rows for k in r["overrides"]}) if keys is None else list(keys)
    header = ["job", *swept, *((labels or {}).get(m, m) for m in metrics), "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            str(r["job"]),
            *(r["overrides"].get(k, "") for k in swept),
            *(_fmt(lookup(r["metrics"], canonical(m))) for m in metrics),
            r["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
