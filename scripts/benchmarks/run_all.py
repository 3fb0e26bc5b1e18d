#!/usr/bin/env python
"""Run the benchmarks and write ``benchmarks/results.md`` + ``benchmarks/results.json``.

  python scripts/benchmarks/run_all.py [--only 1,4] [--quick] [--device cpu|cuda] [--out DIR]

Rows (one module each under scripts/benchmarks/, each with ``run(quick, device) -> list[dict]``):
  1  data loading vs the official loader steps     4  fusion at full resolution
  2  Mask2Former mode vs transformers' Mask2Former  5  entity AP vs pycocotools
  3  CropFormer cost, 3b end-to-end inference, 3c training step (vs the official anchors)
  6  deformable attention core vs transformers'    7  bf16 vs fp32 inference on CPU (row7_bf16)
  8  exported runtimes (ONNX Runtime, OpenVINO; fp32/bf16/int8) vs eager: % of the in-run peak
The results files are rewritten after every row, so an interrupted run keeps what it measured.
``--device cuda`` runs the GPU module (absolute images/s and memory per model) instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import diagnosis  # noqa: E402

#: Row id -> module, in the order they run (cheap first).
ROWS: dict[str, str] = {
    "6": "row6_msda",
    "5": "row5_eval",
    "4": "row4_fusion",
    "1": "row1_data",
    "2": "row2_network",
    "3": "row3_cropformer",
    "7": "row7_bf16",
    "8": "row8_runtimes",
}
ALIASES = {"3b": "3", "3c": "3", "6b": "6"}


#: What the 2026-11-25 runs (before ``in_run``/``statistic``/``machine`` were recorded) did, by
#: row id: (in_run, statistic), read from the scripts of that date (git 992b1b7).
LEGACY = {
    "1": (True, "median of 5 (ours) / 3 (reference) samples at 4000x3000, 3 / 1 at 8000x6000"),
    "2": (True, "min of 3 (512x512 inference) or 2, 1 warm-up, sides in separate processes"),
    "3": (False, "as rows 3b / 3c"),
    "3b": (False, "single run, no warm-up"),
    "3c": (False, "single run, 1 warm-up"),
    "4": (True, "single run, no warm-up"),
    "5": (True, "single run"),
    "6": (True, "min of 3, 1 warm-up, sides interleaved"),
    "6b": (True, "min of 3, 1 warm-up, sides interleaved"),
}
LEGACY_MACHINE = (
    "not recorded (runs of 2026-11-25; the session notes say that machine, of the same name, "
    "had bf16 units)"
)


def upgrade_legacy(r: dict[str, Any]) -> dict[str, Any]:
    """Fill the fields a row of an older results.json lacks and re-derive its verdict.

    Figures stay as measured; only the labels change: ``in_run``/``statistic`` of the scripts of
    that date, ``machine`` "not recorded", ``met`` = old verdict AND the check (a check text
    saying DIFFER/DIFFERENT/NOT counts as failed), and the ratio rules of issue 15 (no ratio
    for bf16 vs the fp32 anchors; measured lower bounds where the reference ran out of memory;
    row 6's >= 1.0x).
    """
    if "in_run" in r:
        return r
    in_run, stat = LEGACY.get(r["row"], (None, "not recorded"))
    r["in_run"], r["statistic"] = in_run, stat
    r["machine"] = LEGACY_MACHINE
    r["legacy"] = True
    r["note"] = (
        f"Old figures: measured {r.get('date', '?')} by the scripts of that date and not "
        "re-measured since; labels (in run, statistic, ratio, met) re-derived for issue 15. "
        + str(r.get("note", ""))
    )
    if in_run is False:
        r["reference_source"] = "paper" if r["row"] == "3" else "anchors"
    check = str(r.get("check", ""))
    failed = any(w in check for w in ("DIFFER", "NOT compared", "failed"))
    r["check_passed"] = None if r["row"] in ("3", "3b", "3c") else not failed
    meets = r.get("met")
    if r["row"] in ("6", "6b") and r.get("ratio") is not None:
        meets = r["ratio"] >= 1.0
    if r["row"] == "3c" and "bf16" in r["what"]:
        r["ratio"], meets = None, None
    if r["row"] == "3b" and "OOM" in str(r.get("reference")) and r.get("ours_peak_gb"):
        r["ratio"], r["ratio_bound"] = round(20.0 / r["ours_peak_gb"], 3), "lower"
    if r["row"] == "4" and r.get("reference_oom") and r.get("ours_peak_gb"):
        r["ratio"], r["ratio_bound"] = round(16.0 / r["ours_peak_gb"], 3), "lower"
        meets = r["ratio"] >= 3.0
        r["check_passed"] = None if "row above" in check else r["check_passed"]
    if r["row"] == "1" and r.get("ours_s"):
        import row1_data

        size = (4000, 3000) if "4000x3000" in r["what"] else (8000, 6000)
        mode = "train" if "training" in r["what"] else "eval"
        anchor = row1_data.ANCHOR_S[(*size, mode)]
        r["ratio_vs_anchors"] = round(anchor / r["ours_s"], 3)
        target = 5.0 if size == (4000, 3000) else 20.0
        meets = bool(meets) and r["ratio_vs_anchors"] >= target
        r["target"] = f">= {target:.0f}x in run and vs anchors, same masks"
    if r["row"] == "2" and "inference" in r["what"]:
        r["check_passed"] = None  # no tolerance was applied then
    r["meets_target"] = meets
    r["met"] = common.decide_met(meets, r["check_passed"])
    return r


def select(only: str | None) -> list[str]:
    """Row ids to run, in run order (``--only 1,3b`` -> ['1', '3'])."""
    if not only:
        return list(ROWS)
    wanted = set()
    for part in only.split(","):
        key = ALIASES.get(part.strip().lower(), part.strip().lower())
        if key not in ROWS:
            raise SystemExit(f"--only: unknown row {part!r}; choose from {sorted(ROWS)} or 3b, 3c")
        wanted.add(key)
    return [k for k in ROWS if k in wanted]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=None, help="comma-separated rows (1,2,3,3b,3c,4,5,6,7,8)")
    p.add_argument("--quick", action="store_true", help="fewer images / repetitions")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", default=str(common.REPO / "benchmarks"))
    p.add_argument(
        "--render-only",
        action="store_true",
        help="re-render results.md from results.json (e.g. after editing diagnosis.py)",
    )
    args = p.parse_args(argv)
    if args.render_only:
        data = json.loads((Path(args.out) / "results.json").read_text())
        rendered = [diagnosis.annotate(upgrade_legacy(r)) for r in data["rows"]]
        md = common.write_results(rendered, args.out, data["command"])
        print(f"[bench] re-rendered {md}")
        if Path(args.out).resolve() == (common.REPO / "benchmarks").resolve():
            common.sync_readme(md)
        return 0
    common.VERSIONS = common.versions()
    common.MACHINE = common.machine_info()
    command = run_command = "make bench" + (
        f' ARGS="{" ".join(argv or sys.argv[1:])}"' if (argv or sys.argv[1:]) else ""
    )
    rows: list[dict[str, Any]] = []
    previous = Path(args.out) / "results.json"
    if args.only and previous.is_file():
        # a partial run replaces its own rows and keeps the others of the last full run
        redo = set(select(args.only))
        old = json.loads(previous.read_text())
        rows = [
            upgrade_legacy(r) for r in old["rows"] if ALIASES.get(r["row"], r["row"]) not in redo
        ]
        command = old.get("command", command)
    if args.device == "cuda":
        modules = ["gpu_models"]
    else:
        modules = [ROWS[k] for k in select(args.only)]
    t_all = time.perf_counter()
    for name in modules:
        t = time.perf_counter()
        load = os.getloadavg()[0]  # a busy machine slows every timing: record it with the row
        print(f"[bench] {name} ... (load average {load:.2f})", flush=True)
        try:
            new = importlib.import_module(name).run(quick=args.quick, device=args.device)
        except Exception as exc:  # noqa: BLE001 - keep the other rows
            new = [common.failed_row(name, "failed", f"{type(exc).__name__}: {exc}")]
        for r in new:
            r["produced_by"] = run_command
            diagnosis.annotate(r)
            r["versions"] = common.VERSIONS
            r["machine"] = common.MACHINE
            r["load_avg_at_start"] = round(load, 2)
            r["device"] = args.device
            print(
                f"  {r['row']:>2} {r['what'][:70]:70s} ratio={r['ratio']} met={r['met']}",
                flush=True,
            )
        rows.extend(new)
        rows.sort(key=lambda r: (r["row"].rstrip("bc"), r["row"]))
        common.write_results(rows, args.out, command)
        print(f"[bench] {name} done in {time.perf_counter() - t:.0f} s", flush=True)
    md = common.write_results(rows, args.out, command)
    print(f"[bench] wrote {md} and results.json in {time.perf_counter() - t_all:.0f} s")
    if Path(args.out).resolve() == (common.REPO / "benchmarks").resolve():
        synced = common.sync_readme(md)
        page = common.BENCH_TABLE_PAGE.relative_to(common.REPO)
        print(f"[bench] {page} table {'updated' if synced else 'NOT updated (no markers)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
