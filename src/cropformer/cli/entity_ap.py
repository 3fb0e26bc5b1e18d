"""Entity AP of a results file: ``python -m cropformer.cli.entity_ap --gt GT --results RESULTS``.

For results files of any model (including the official ``coco_instances_results.json``); add
``--boundary`` for boundary AP. Prints a table and, as its last line, one JSON object with ``AP,
AP50, AP75, APs, APm, APl`` (percent), ``AR1, AR10, AR100``, ``AR100_50`` and ``boundary_AP``
(null without ``--boundary``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from cropformer.evaluation.boundary_ap import DEFAULT_DILATION_RATIO
from cropformer.evaluation.entity_ap import (
    BACKENDS,
    SUMMARY_KEYS,
    evaluate_entity_results,
    load_gt,
    load_results,
)


def _table(summary: dict[str, float]) -> str:
    keys = [
        k for k in (*SUMMARY_KEYS, "boundary_AP", "boundary_AP50", "boundary_AP75") if k in summary
    ]
    width = max(len(k) for k in keys)
    lines = [f"{'metric':<{width}} | value", f"{'-' * width}-+-------"]
    lines += [f"{k:<{width}} | {summary[k]:6.3f}" for k in keys]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate a COCO results json against a ground-truth json; print a table and a JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m cropformer.cli.entity_ap",
        description="Class-agnostic entity AP (AP^e) of COCO mask results, e.g. the official "
        "coco_instances_results.json.",
    )
    parser.add_argument("--gt", required=True, help="ground-truth annotation json (COCO format)")
    parser.add_argument("--results", required=True, help="COCO results json (RLE masks)")
    parser.add_argument("--boundary", action="store_true", help="also compute boundary AP")
    parser.add_argument("--backend", default="faster_coco_eval", choices=BACKENDS)
    parser.add_argument("--dilation-ratio", type=float, default=DEFAULT_DILATION_RATIO)
    parser.add_argument(
        "--renumber-ann-ids",
        action="store_true",
        help="renumber ground-truth annotation ids 1..K (an id 0 can never match "
        "in COCOeval; off by default like the official evaluator)",
    )
    parser.add_argument(
        "--only-result-images",
        action="store_true",
        help="evaluate only the images that have at least one result (a partial "
        "run); default: every ground-truth image, like the official evaluator",
    )
    args = parser.parse_args(argv)

    dets = load_results(args.results)
    gt = load_gt(args.gt)
    image_ids = None if not args.only_result_images else sorted({int(d["image_id"]) for d in dets})
    summary = evaluate_entity_results(
        gt,
        dets,
        backend=args.backend,
        boundary=args.boundary,
        image_ids=image_ids,
        dilation_ratio=args.dilation_ratio,
        gt_collapsed=True,
        renumber_ann_ids=args.renumber_ann_ids,
    )
    print(_table(summary))
    line: dict[str, Any] = {k: _json_float(summary[k]) for k in SUMMARY_KEYS}
    line["boundary_AP"] = _json_float(summary["boundary_AP"]) if args.boundary else None
    print(json.dumps(line))
    sys.stdout.flush()
    return line


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


if __name__ == "__main__":
    main()
