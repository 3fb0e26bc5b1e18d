"""Shared helpers of the benchmarks: rows, the results writer, isolated measurement children.

Every measured case runs in a fresh Python process (``run_isolated``) so that its peak RSS
(``ru_maxrss`` of that process) is not mixed with another case's, and a reference that needs more
memory than the machine has can be capped (``RLIMIT_AS``) and reported as "OOM at X GB".

A row is a plain dict (see ``make_row``); ``write_results`` renders ``results.md`` (a table plus
notes) and ``results.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import platform
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
    "inputs",
    "threads",
    "device",
    "versions",
    "date",
    "check",
    "note",
)


def versions() -> str:
    """Python / torch / transformers / pycocotools versions, one short string."""
    out = [f"py {platform.python_version()}"]
    for name in ("torch", "transformers", "pycocotools", "timm"):
        try:
            mod = importlib.import_module(name)
            out.append(f"{name} {getattr(mod, '__version__', '?')}")
        except Exception:  # noqa: BLE001 - optional packages
            pass
    return ", ".join(out)


def make_row(
    row: str,
    what: str,
    *,
    reference: str,
    ours: str,
    ratio: float | None,
    target: str,
    met: bool | None,
    inputs: str,
    threads: int = 2,
    device: str = "cpu",
    check: str = "",
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One results row (``extra`` keeps raw numbers, e.g. ``ours_s``, ``reference_s``)."""
    r: dict[str, Any] = {
        "row": row,
        "what": what,
        "reference": reference,
        "ours": ours,
        "ratio": None if ratio is None else round(float(ratio), 3),
        "target": target,
        "met": met,
        "inputs": inputs,
        "threads": threads,
        "device": device,
        "versions": VERSIONS,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
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
        met=met,
        inputs=inputs,
        device=device,
        check="failed",
        note=str(error)[:400],
    )


VERSIONS = ""  # filled lazily by run_all (importing torch here would slow the children down)


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


def render_markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    """The results table (one line per row) followed by the checks and notes."""
    cols = ("row", "what", "reference", "ours", "ratio", "target", "met", "inputs")
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}`. "
        + (
            f"Device: {rows[0]['device']}, {rows[0]['threads']} threads; {rows[0]['versions']}; "
            f"{rows[0]['date']}."
            if rows
            else ""
        ),
        "Ratio = reference / ours for times and memory (> 1: ours is faster / leaner). Each ratio "
        "is measured in one run on the same input; absolute CPU times are noisy on this shared "
        "machine.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    lines += ["", "## Checks and notes", ""]
    seen: dict[str, str] = {}  # note text -> the first row that printed it
    for r in rows:
        label = f"{r['row']} {r['what']}"
        text = f"- **{label}**: check: {r.get('check') or '-'}."
        if r.get("produced_by") and r["produced_by"] != command:
            text += f" (Measured by `{r['produced_by']}`.)"
        for key, prefix in (("note", ""), ("diagnosis", "**Why the target is missed:** ")):
            body = r.get(key)
            if not body:
                continue
            if body in seen:
                text += f" {prefix or 'Note: '}as for *{seen[body]}* above."
            else:
                seen[body] = label
                text += f" {prefix}{body}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | Path, command: str) -> Path:
    """Write ``results.md`` and ``results.json`` under ``out_dir``; returns the md path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"row {r.get('row')!r} lacks keys {missing}")
    (out / "results.json").write_text(
        json.dumps({"command": command, "rows": list(rows)}, indent=1, default=str) + "\n"
    )
    md = out / "results.md"
    md.write_text(render_markdown(rows, command))
    return md


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
    return {"median": statistics.median(times), "min": min(times), "times": times, "result": result}


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
