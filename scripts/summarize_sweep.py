"""Summarise a Hydra multirun directory: one row per job, swept values vs metrics.

Usage: ``python scripts/summarize_sweep.py logs/<task>/multiruns/<time> [--metric NAME]``.
Prints a table and writes ``sweep_summary.md`` and ``sweep_summary.json`` into the directory.
Failed jobs (``FAILED.txt`` or no ``metrics.json``) are listed with their status.
Metric names are those printed at validation (``val/entity_ap50``); ``entity_ap50`` and
``val_entity_ap50`` are accepted too (``cropformer.run.metric_names``); an unknown name is an
error that lists the known ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cropformer.run.metric_names import canonical
from cropformer.run.records import collect, to_markdown


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
