"""Shared helpers of the benchmarks: rows, the results writer, isolated measurement children.

Every measured case runs in a fresh Python process (``run_isolated``) so that its peak RSS
(``ru_maxrss`` of that process) is not mixed with another case's, and a reference that needs more
memory than the machine has can be capped (``RLIMIT_AS``) and reported as "OOM at X GB".

A row is a plain dict (see ``make_row``): ``met`` is computed there from whether the measurement
meets the target and whether the row's correctness check passed; ``in_run`` says whether the
reference was measured in the same run (False: the official anchors, measured elsewhere);
``statistic`` how the times were summarised; ``machine`` the CPU (bf16 units or not).
``write_results`` renders ``results.md`` (a table plus notes) and ``results.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO / ".." / "shared"

ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

ROW_KEYS = (
    "row",
    "what",
    "reference",
    "ours",
    "ratio",
    "target",
    "met",
    "meets_target",
    "check_passed",
    "in_run",
    "statistic",
    "inputs",
    "threads",
    "device",
    "versions",
    "machine",
    "date",
    "check",
    "note",
)

#: Where the reference figures of the rows that do not measure the reference come from.
ANCHORS_DOC = "../shared/docs/official_perf_anchors.md"
ANCHORS_SOURCE = (
    "official code (CropFormer 6e7e13a on detectron2 02b5c4e) run outside this project: "
    "torch 2.13.0+cpu, Python 3.11.7, 2-core AMD EPYC VM with AVX-512 incl. BF16/VNNI, fp32, "
    "2 threads; measured before 2026-11-25 (the document records no date; the first benchmark "
    "citing it is of 2026-11-25)"
)


def versions() -> str:
    """Python / torch / transformers / pycocotools versions, one short string."""
    out = [f"py {platform.python_version()}"]
    for name in ("torch", "transformers", "pycocotools", "faster_coco_eval", "timm"):
        try:
            mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional packages
            continue
        version = getattr(mod, "__version__", None)
        if version is None:
            with contextlib.suppress(Exception):
                from importlib.metadata import version as _v

                version = _v(name)
        out.append(f"{name} {version or '?'}")
    return ", ".join(out)


def machine_info() -> dict[str, Any]:
    """The CPU the rows run on: model, cores, torch's CPU capability, bf16 matrix units.

    ``bf16_units``: the CPU advertises ``avx512_bf16`` or ``amx_bf16`` (without them a bf16
    GEMM in torch is emulated and far slower than fp32, so bf16 timings mean something else).
    """
    model, flags = platform.processor() or "?", set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("?", "", "x86_64"):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    capability = "?"
    with contextlib.suppress(Exception):
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_cpu_capability": capability,
        "bf16_units": bool(flags & {"avx512_bf16", "amx_bf16"}),
    }


def machine_text(m: dict[str, Any] | str | None) -> str:
    """One line describing a row's machine (``machine`` field)."""
    if not m:
        return "not recorded"
    if isinstance(m, str):
        return m
    units = "with bf16 units" if m.get("bf16_units") else "WITHOUT bf16 units (bf16 emulated)"
    return (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch CPU capability "
        f"{m.get('torch_cpu_capability', '?')}, {units}"
    )


def decide_met(meets_target: bool | None, check_passed: bool | None) -> bool | None:
    """``met`` of a row: the measurement meets the target AND the correctness check passed.

    ``meets_target`` None: a report-only row (no target), so no verdict. ``check_passed`` None:
    the row has no pass/fail check (its ``check`` text says so); the verdict is the target's.
    """
    if meets_target is None:
        return None
    return bool(meets_target) and check_passed is not False


def fmt_ratio(ratio: float | None, bound: str | None = None) -> str:
    """A ratio cell: ``2.50x``, ``>= 3.29x`` for a measured lower bound, ``-`` for none."""
    if ratio is None:
        return "-"
    return (">= " if bound == "lower" else "") + f"{ratio:.2f}x"


def make_row(
    row: str,
    what: str,
    *,
    reference: str,
    ours: str,
    ratio: float | None,
    target: str,
    inputs: str,
    meets_target: bool | None = None,
    check_passed: bool | None = None,
    in_run: bool | None = None,
    statistic: str | None = None,
    met: bool | None = None,
    threads: int = 2,
    device: str = "cpu",
    check: str = "",
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One results row (``extra`` keeps raw numbers, e.g. ``ours_s``, ``reference_s``).

    ``met`` is computed (``decide_met``) from ``meets_target`` (did the measurement reach the
    target) and ``check_passed`` (did the row's correctness check pass). ``met=`` is accepted
    as an old spelling of ``meets_target``. ``in_run``: the reference was measured in this run
    on the same input (False: anchors measured elsewhere, or a paper's figures).
    ``statistic``: how the times were summarised (e.g. "median of 5, 1 warm-up").
    """
    if meets_target is None and met is not None:
        meets_target = met
    r: dict[str, Any] = {
        "row": row,
        "what": what,
        "reference": reference,
        "ours": ours,
        "ratio": None if ratio is None else round(float(ratio), 3),
        "target": target,
        "met": decide_met(meets_target, check_passed),
        "meets_target": None if meets_target is None else bool(meets_target),
        "check_passed": None if check_passed is None else bool(check_passed),
        "in_run": in_run,
        "statistic": statistic,
        "inputs": inputs,
        "threads": threads,
        "device": device,
        "versions": VERSIONS,
        "machine": MACHINE,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "check": check,
        "note": note,
    }
    r.update(extra)
    return r


def failed_row(
    row: str,
    what: str,
    error: object,
    *,
    target: str = "-",
    met: bool | None = None,
    inputs: str = "-",
    device: str = "cpu",
) -> dict[str, Any]:
    """The row reported for a case that could not be measured (the error goes into its note)."""
    return make_row(
        row,
        what,
        reference="-",
        ours="-",
        ratio=None,
        target=target,
        meets_target=None if target in ("-", "report") else False,
        check_passed=False,
        in_run=None,
        statistic="not measured",
        inputs=inputs,
        device=device,
        check="failed",
        note=str(error)[:400],
    )


VERSIONS = ""  # filled lazily by run_all (importing torch here would slow the children down)
MACHINE: dict[str, Any] = {}  # likewise (machine_info imports torch)


def fmt_s(x: float | None) -> str:
    """Seconds for the table."""
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_gb(x: float | None) -> str:
    """GB (decimal) for the table."""
    return "-" if x is None else f"{x:.2f} GB"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.2f}x"
    return str(v).replace("|", "/").replace("\n", " ")


def ratio_cell(r: dict[str, Any]) -> str:
    """The ratio column: in-run or anchor ratio, bound marker, and the anchors' ratio if any."""
    text = fmt_ratio(r.get("ratio"), r.get("ratio_bound"))
    if r.get("ratio_vs_anchors") is not None:
        text += f" (vs anchors: {fmt_ratio(r['ratio_vs_anchors'])})"
    return text


def in_run_cell(r: dict[str, Any]) -> str:
    """The "in run" column: yes (reference measured here), anchors/paper (elsewhere), ?."""
    v = r.get("in_run")
    if v is None:
        return "?"
    return "yes" if v else (r.get("reference_source") or "no (anchors)")


def _machines(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Machine description -> label A, B, ... in order of first appearance."""
    labels: dict[str, str] = {}
    for r in rows:
        text = machine_text(r.get("machine"))
        if text not in labels:
            labels[text] = chr(ord("A") + len(labels))
    return labels


def render_markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    """The results table (one line per row) followed by the checks and notes."""
    machines = _machines(rows)
    cols = (
        "row",
        "what",
        "reference",
        "ours",
        "ratio",
        "target",
        "met",
        "in run",
        "statistic",
        "inputs",
    )
    dates = sorted({str(r.get("date", "?"))[:10] for r in rows})
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` (rows measured on {', '.join(dates) or '-'}; each row's "
        "date, machine and versions are in the *measured* column and in `results.json`). "
        "CPU rows: 2 torch threads.",
        "",
        "Machines (label used in the *measured* column):",
        "",
        *[f"- **{label}**: {text}" for text, label in machines.items()],
        "",
        "Ratio = reference / ours for times and memory (> 1: ours is faster / leaner). "
        "*in run* = yes: the reference was measured in the same run, on the same input and "
        "machine as ours. *anchors*: the reference is the official code's figure from "
        f"`{ANCHORS_DOC}` ({ANCHORS_SOURCE}); such ratios compare across machines and torch "
        "versions. *paper*: the paper's GPU figures (no ratio). `>= X` marks a measured lower "
        "bound (the reference did not fit its memory cap). No ratio is given where ours runs "
        "bf16 and the reference fp32. *met* = the measurement meets the target AND the row's "
        "correctness check passed (computed by the scripts). Absolute CPU times are noisy on "
        "this shared machine.",
        "",
        "| " + " | ".join(cols) + " | measured |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for r in rows:
        cells = []
        for c in cols:
            if c == "ratio":
                cells.append(ratio_cell(r))
            elif c == "in run":
                cells.append(in_run_cell(r))
            else:
                cells.append(_cell(r.get(c)))
        measured = f"{r.get('date', '?')}, {machines[machine_text(r.get('machine'))]}"
        lines.append("| " + " | ".join(cells) + f" | {_cell(measured)} |")
    lines += _notes(rows, command)
    return "\n".join(lines) + "\n"


#: a sentence of a note at least this long, found in two rows or more, is written once
SHARED_MIN_CHARS = 80


def _sentences(text: str) -> list[str]:
    return [t for t in re.split(r"(?<=\.) (?=[A-Z(*])", text.strip()) if t]


def _notes(rows: Sequence[dict[str, Any]], command: str) -> list[str]:
    """One short note per row; explanations shared by several rows written once (E1, E2, ...)."""
    seen_in: dict[str, set[str]] = {}
    for r in rows:
        for key in ("note", "diagnosis"):
            for sentence in _sentences(r.get(key) or ""):
                seen_in.setdefault(sentence, set()).add(f"{r['row']} {r['what']}")
    common = [s for s, where in seen_in.items() if len(where) > 1 and len(s) >= SHARED_MIN_CHARS]
    shared = {sentence: f"E{i + 1}" for i, sentence in enumerate(common)}
    versions = {r.get("versions") for r in rows if r.get("versions")}
    lines = ["", "## Notes", ""]
    if len(versions) == 1:
        lines += [f"Versions (every row): {next(iter(versions))}.", ""]
    for r in rows:
        label = f"{r['row']} {r['what']}"
        passed = {True: "passed", False: "**FAILED**", None: "no pass/fail check"}[
            r.get("check_passed")
        ]
        text = f"- **{label}**: check ({passed}): {r.get('check') or '-'}."
        if r.get("produced_by") and r["produced_by"] != command:
            text += f" (Measured by `{r['produced_by']}`.)"
        if r.get("versions") and len(versions) > 1:
            text += f" Versions: {r['versions']}."
        if r.get("load_avg_at_start") is not None:
            text += f" Load average at start: {r['load_avg_at_start']}."
        for key, prefix in (("note", ""), ("diagnosis", "**Why the target is missed:** ")):
            own, refs = [], []
            for sentence in _sentences(r.get(key) or ""):
                (refs if sentence in shared else own).append(sentence)
            if not own and not refs:
                continue
            body = " ".join(own)
            if refs:
                body += (" " if body else "") + "See " + ", ".join(shared[x] for x in refs) + "."
            text += f" {prefix}{body}"
        lines.append(text)
    if shared:
        lines += ["", "## Explanations shared by several rows", ""]
        lines += [f"- **{label}**: {sentence}" for sentence, label in shared.items()]
    return lines


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | Path, command: str) -> Path:
    """Write ``results.md`` and ``results.json`` under ``out_dir``; returns the md path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"row {r.get('row')!r} lacks keys {missing}")
        if r["met"] != decide_met(r["meets_target"], r["check_passed"]):
            raise ValueError(f"row {r['row']!r} ({r['what']}): met is not target AND check")
    (out / "results.json").write_text(
        json.dumps({"command": command, "rows": list(rows)}, indent=1, default=str) + "\n"
    )
    md = out / "results.md"
    md.write_text(render_markdown(rows, command))
    return md


README_START, README_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


#: the page holding the bench-table markers (the README links it)
BENCH_TABLE_PAGE = REPO / "docs" / "performance.md"


def sync_readme(md: str | Path, readme: str | Path = BENCH_TABLE_PAGE) -> bool:
    """Copy the results table of ``md`` into ``readme`` (docs/performance.md) between the
    bench-table markers.

    Returns False (page untouched) when the markers are missing, so the page's table can
    never silently disagree with ``benchmarks/results.md`` after a run that could update it.
    """
    text = Path(readme).read_text()
    if README_START not in text or README_END not in text:
        return False
    lines = Path(md).read_text().splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.startswith("| row |")), None)
    if first is None:
        return False
    table = []
    for ln in lines[first:]:  # the first table only (the results table)
        if not ln.startswith("|"):
            break
        table.append(ln)
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    body = "\n".join(table)
    Path(readme).write_text(f"{head}{README_START}\n{body}\n{README_END}{tail}")
    return True


# ----------------------------------------------------------------------------- measurement


def set_threads(n: int) -> None:
    """Torch intra-op threads ``n``, inter-op 1 (as the official anchors)."""
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def timeit(fn: Callable[[], Any], warmup: int = 1, repeats: int = 2) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` + ``repeats`` times; median/min of the timed runs, last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "times": times,
        "warmup": warmup,
        "result": result,
    }


def stat_text(kind: str, n: int, warmup: int, interleaved: bool = False) -> str:
    """How a time was summarised, e.g. ``median of 5, 1 warm-up`` (the ``statistic`` field)."""
    kind = "single run" if n == 1 else f"{kind} of {n}"
    extra = f"{warmup} warm-up" if warmup else "no warm-up"
    return f"{kind}, {extra}" + (", sides interleaved" if interleaved else "")


def spread_text(times: Sequence[float]) -> str:
    """``min-max`` of repeated times (``1.02-1.10 s``), for notes on the spread."""
    if not times:
        return "-"
    lo, hi = min(times), max(times)
    return fmt_s(lo) if len(times) == 1 else f"{fmt_s(lo)}-{fmt_s(hi)}"


def timeit_pair(
    fa: Callable[[], Any], fb: Callable[[], Any], warmup: int = 1, repeats: int = 3
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time two functions alternately (a, b, a, b, ...) so that machine noise hits both alike."""
    res: list[dict[str, Any]] = [{"times": [], "result": None}, {"times": [], "result": None}]
    for i in range(warmup + max(1, repeats)):
        order = [(res[0], fa), (res[1], fb)] if i % 2 == 0 else [(res[1], fb), (res[0], fa)]
        for r, fn in order:
            t = time.perf_counter()
            r["result"] = fn()
            if i >= warmup:
                r["times"].append(time.perf_counter() - t)
    for r in res:
        r["median"] = statistics.median(r["times"])
        r["min"] = min(r["times"])
        r["max"] = max(r["times"])
    return res[0], res[1]


def peak_rss_gb() -> float:
    """Peak RSS of this process so far (kernel high-water mark), GB (decimal)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def rss_gb() -> float:
    """Current RSS of this process, GB (decimal); 0.0 where /proc is missing."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    return 0.0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ``clear_refs`` 5).

    Lets a child report what one stage adds above what the process already held. Returns
    False where the kernel does not allow it (the peak then includes earlier stages).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def is_oom(exc: BaseException) -> bool:
    """An allocation failure (RLIMIT_AS or real)."""
    text = f"{type(exc).__name__}: {exc}"
    return (
        isinstance(exc, MemoryError)
        or "can't allocate memory" in text
        or "not enough memory" in text
    )


def run_isolated(
    module: str,
    func: str,
    kwargs: dict[str, Any] | None = None,
    *,
    mem_limit_gb: float | None = None,
    timeout_s: float = 900,
    threads: int = 2,
) -> dict[str, Any]:
    """Call ``scripts/benchmarks/<module>.py:<func>(**kwargs)`` in a fresh process.

    Returns the function's dict plus ``peak_rss_gb`` of the child (or ``oom``/``error`` with
    ``rss_at_fail_gb`` when it failed; ``mem_limit_gb`` caps its address space).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        result_path = f.name
    env = dict(os.environ)
    env.update(ENV)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    cmd = [
        sys.executable,
        str(HERE / "common.py"),
        "--child",
        module,
        func,
        json.dumps(kwargs or {}),
        result_path,
        str(threads),
    ]

    def limit() -> None:
        if mem_limit_gb is not None:
            b = int(mem_limit_gb * 1e9)
            resource.setrlimit(resource.RLIMIT_AS, (b, b))

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=env, preexec_fn=limit, timeout=timeout_s, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f} s", "wall_s": time.perf_counter() - t0}
    try:
        res = json.loads(Path(result_path).read_text() or "{}")
    except json.JSONDecodeError:
        res = {}
    finally:
        Path(result_path).unlink(missing_ok=True)
    res["wall_s"] = time.perf_counter() - t0
    if proc.returncode != 0 and "error" not in res and "oom" not in res:
        tail = (proc.stderr or "")[-1500:]
        res["error"] = f"exit {proc.returncode}: {tail}"
        if mem_limit_gb is not None and ("memory" in tail.lower() or proc.returncode < 0):
            res["oom"] = True
    if res.get("oom") and mem_limit_gb is not None:
        res["mem_limit_gb"] = mem_limit_gb
    return res


def _child(module: str, func: str, kwargs_json: str, result_path: str, threads: int) -> int:
    sys.path.insert(0, str(HERE))
    set_threads(threads)
    out: dict[str, Any]
    try:
        fn = getattr(importlib.import_module(module), func)
        out = dict(fn(**json.loads(kwargs_json)))
        out["peak_rss_gb"] = peak_rss_gb()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out = {
            "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            "oom": is_oom(exc),
            "rss_at_fail_gb": peak_rss_gb(),
            "traceback": traceback.format_exc()[-2000:],
        }
        code = 1
    Path(result_path).write_text(json.dumps(out, default=float))
    return code


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])))
    print("internal: python common.py --child MODULE FUNC KWARGS_JSON RESULT_PATH THREADS")
    sys.exit(2)
