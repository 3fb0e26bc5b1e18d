"""Summarise a Hydra multirun directory: one row per job, swept values vs metrics.

Usage: ``python scripts/summarize_sweep.py logs/<task>/multiruns/<time> [--metric NAME]``.
Prints a table and writes ``sweep_summary.md`` and ``sweep_summary.json`` into the directory.
Failed jobs (``FAILED.txt`` or no ``metrics.json``) are listed with their status.
Metric names are those printed at validation (``val/entity_ap50``); ``entity_ap50`` and
``val_entity_ap50`` are accepted too (``cropformer.utils.metric_names``); an unknown name is an
error that lists the known ones.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from cropformer.utils.metric_names import canonical, lookup


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per job directory (``<sweep_dir>/<job number>``), sorted by job number."""
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
                "overrides": _overrides(job),
                "metrics": metrics,
            }
        )
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return "-" if value is None else str(value)


def to_markdown(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    """A markdown table: job, each swept key, the metrics, status."""
    swept = sorted({k for r in rows for k in r["overrides"]})
    header = ["job", *swept, *metrics, "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            str(r["job"]),
            *(r["overrides"].get(k, "") for k in swept),
            *(_fmt(lookup(r["metrics"], m)) for m in metrics),
            r["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="metric(s) to show, as printed at validation (val/entity_ap50; entity_ap50 and "
        "val_entity_ap50 work too) or minutes/steps (default: val/entity_ap, minutes)",
    )
    args = parser.parse_args(argv)
    try:
        metrics = [canonical(m) for m in (args.metric or ["val/entity_ap", "minutes"])]
        rows = collect(args.sweep_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = to_markdown(rows, metrics)
    print(table)
    (args.sweep_dir / "sweep_summary.md").write_text(table + "\n")
    (args.sweep_dir / "sweep_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
