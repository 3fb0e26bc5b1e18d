"""Entities for many image files: the one file loop behind ``predict.py`` and the Python API.

``list_images`` turns a directory (recursively), a file, a glob or a list into image paths in
natural order (``2.jpg`` before ``10.jpg``, ``scene2/`` before ``scene10/``); ``every_nth`` keeps
every n-th frame of each folder; ``output_stems`` (flat) or ``mirror_names`` (``out/<relative
input path>``) name each image's outputs; ``shard_indices`` splits the list for ``shard=i/n`` by
frame or by scene (the folder holding the frames); ``run_on_files`` decodes and builds the views
in DataLoader workers ahead of the network, runs several images per forward if asked, writes each
output atomically (temporary file + rename) and marks an image complete only after all its outputs
are in place, so an interrupted run resumes where it stopped and never takes a partial output for a
finished one.

A folder of outputs records what produced them (``producer``: the checkpoint's identity and the
settings that change pixels, given by the caller): an image counts as done only under the same
record, and a run with another record refuses to resume into the folder (one line naming the
difference), so a resume never mixes the results of two settings. The record holds no path or
shard, so every shard of one job computes the same record.

What is written is given by the caller (``Output``s: a suffix and a write function), so this
module needs no writer of a higher floor (``cropformer.api`` passes the PNG / RLE writers).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropformer.schema import EntityPrediction
from cropformer.utils.atomic import atomic_path
from cropformer.utils.errors import Interrupted, UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
DONE_DIR = ".cropformer_done"  # <record key>/producer.json + one completion list per shard
PRODUCER_FILE = "producer.json"
LAYOUTS = ("flat", "mirror")
SHARD_BY = ("frame", "scene")
_DIGITS = re.compile(r"([0-9]+)")
_GLOB_CHARS = re.compile(r"[*?\[]")


def natural_key(path: str | Path) -> tuple[tuple[tuple[int, int | str], ...], ...]:
    """Sort key comparing digit runs as numbers, folder by folder (``f2`` < ``f10``)."""
    return tuple(
        tuple((1, int(t)) if t.isdigit() else (0, t) for t in _DIGITS.split(part) if t)
        for part in Path(path).parts
    )


def list_images(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image paths in natural order from a directory (image files at any depth), a file, a glob
    (matching files or folders), or a list of those.

    Raises:
        UserError: nothing matches (names the input and what to pass).
    """
    if isinstance(spec, (list, tuple)):
        return sorted({p for item in spec for p in list_images(item)}, key=natural_key)
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    elif path.is_file():
        files = [path]
    else:  # a glob: matching files, and the images inside matching folders (scans/*/color)
        files = []
        for match in map(Path, glob.glob(str(path), recursive=True)):
            if match.is_dir():
                files += [p for p in match.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
            elif match.is_file():
                files.append(match)
        files = [p for p in dict.fromkeys(files) if p.is_file()]
    if not files:
        raise UserError(
            f"input={spec}: no image files found (pass a directory, a file or a quoted glob "
            "such as input='photos/*.jpg')"
        )
    return sorted(files, key=natural_key)


def input_root(spec: str | Path | Sequence[str | Path]) -> Path:
    """The folder ``mirror_names`` is relative to: a directory itself, a file's folder, a glob's
    folder before its first wildcard, or the common folder of a list of those."""
    if isinstance(spec, (list, tuple)):
        roots = [str(input_root(item)) for item in spec]
        return Path(os.path.commonpath(roots)) if roots else Path.cwd()
    text = str(Path(str(spec)).expanduser())
    path = Path(text)
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return path.resolve().parent
    match = _GLOB_CHARS.search(text)
    head = text[: match.start()] if match else text
    base = Path(head) if head.endswith(os.sep) else Path(head).parent
    return (base if str(base) else Path(".")).resolve()


def every_nth(files: Sequence[Path], every: int) -> list[Path]:
    """Every ``every``-th frame of each folder (its 1st, (n+1)-th, ... in the list's order).

    Raises:
        UserError: ``every`` is not an integer >= 1.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UserError(f"every={every!r}: use an integer >= 1 (every=10: frames 0, 10, 20, ...)")
    if every == 1:
        return list(files)
    seen: dict[Path, int] = {}
    out = []
    for f in files:
        k = seen.get(f.parent, 0)
        seen[f.parent] = k + 1
        if k % every == 0:
            out.append(f)
    return out


def output_stems(files: Sequence[Path]) -> list[str]:
    """Output names: the file stems, or (when two inputs share a stem, e.g. a/1.jpg and b/1.jpg)
    the paths relative to the inputs' common folder with ``/`` replaced by ``__``."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    parents = [str(f.resolve().parent) for f in files]
    common = Path(os.path.commonpath(parents))
    named = [str(f.resolve().relative_to(common)).replace("/", "__") for f in files]
    if len(set(named)) == len(named):  # a.jpg and a.png in one folder keep their suffix
        return named
    return [f"{n}__{i}" for i, n in enumerate(named)]


def mirror_names(files: Sequence[Path], root: str | Path) -> list[str]:
    """Output names of the mirror layout: each input's path relative to ``root`` without its
    suffix (``scene0/color/10``); two inputs differing only in suffix keep it (``10.jpg``).

    Raises:
        UserError: an input outside ``root``.
    """
    base = Path(root).resolve()
    rel = []
    for f in files:
        try:
            rel.append(f.resolve().relative_to(base))
        except ValueError as err:
            raise UserError(
                f"output_layout=mirror: {f} is not inside the input folder {base}"
            ) from err
    names = [r.with_suffix("").as_posix() for r in rel]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [r.as_posix() if counts[n] > 1 else n for n, r in zip(names, rel)]


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None or ``""`` -> (0, 1).

    Raises:
        UserError: malformed (names the value and the form expected).
    """
    if spec is None or str(spec) in ("", "None", "0/1"):
        return 0, 1
    try:
        i_str, n_str = str(spec).split("/")
        i, n = int(i_str), int(n_str)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise UserError(
            f"shard={spec}: use shard=i/n with 0 <= i < n (e.g. shard=0/4 ... shard=3/4, or "
            "shard=${oc.env:SLURM_ARRAY_TASK_ID}/4 in a SLURM array)"
        )
    return i, n


def select_shard(num_files: int, shard: tuple[int, int]) -> list[int]:
    """Indices of the sorted input list that shard ``(i, n)`` processes: every n-th from i.

    The shards of one n are disjoint and together cover every index exactly once.
    """
    i, n = shard
    return list(range(i, num_files, n))


def shard_indices(files: Sequence[Path], shard: tuple[int, int], by: str = "frame") -> list[int]:
    """Indices shard ``(i, n)`` processes: every n-th frame (``by="frame"``) or all frames of
    every n-th scene, a scene being the folder that holds the frames (``by="scene"``).

    Either way the shards of one n are disjoint and cover every index exactly once.
    """
    if by not in SHARD_BY:
        raise UserError(f"shard_by={by!r}: use frame (every n-th image) or scene (folders)")
    if by == "frame":
        return select_shard(len(files), shard)
    scenes: dict[Path, int] = {}
    for f in files:
        scenes.setdefault(f.parent, len(scenes))
    i, n = shard
    return [k for k, f in enumerate(files) if scenes[f.parent] % n == i]


@dataclass
class PredictedFile:
    """One image's result, handed to the ``Output`` writers."""

    index: int  # position in the sorted input list (also the json's image_id)
    path: Path
    stem: str
    prediction: EntityPrediction
    image: np.ndarray | None  # (H, W, 3) uint8, only when an output needs it


@dataclass(frozen=True)
class Output:
    """One file per image: ``<stem><suffix>`` written by ``write(path, result)``.

    ``write`` must write exactly ``path``; the loop renames it into place afterwards.
    """

    suffix: str
    write: Callable[[Path, PredictedFile], Any]
    needs_image: bool = False


@dataclass
class FilesSummary:
    """What ``run_on_files`` did (numbers for the final report line)."""

    output_dir: Path
    total: int = 0  # images of this shard
    processed: int = 0  # predicted and written by this run
    already_done: int = 0  # complete from an earlier run, skipped
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    producer: dict[str, Any] = field(default_factory=dict)  # what made the outputs (no paths)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.total,
            "processed": self.processed,
            "already_done": self.already_done,
            "unreadable": len(self.unreadable),
            "unreadable_files": [f for f, _ in self.unreadable],
            "output": str(self.output_dir),
            "seconds": round(self.seconds, 2),
            "images_per_second": round(self.images_per_second, 3),
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "device": self.device,
            "producer": self.producer,
        }


class _ImageViews(torch.utils.data.Dataset[dict[str, Any]]):
    """Decodes image ``k`` of a list and builds its views (runs in DataLoader workers)."""

    def __init__(
        self,
        items: Sequence[tuple[int, Path]],
        make_sample: Callable[..., dict[str, Any]],
        loader: Callable[[Path], np.ndarray],
        keep_image: bool,
    ) -> None:
        self.items = list(items)
        self.make_sample = make_sample
        self.loader = loader
        self.keep_image = keep_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index, path = self.items[k]
        try:
            image = self.loader(path)
        except (OSError, ValueError) as err:  # missing, truncated, not an image (SampleError)
            return {"index": index, "path": path, "error": str(err) or type(err).__name__}
        sample = self.make_sample(image, index, str(path))
        return {
            "index": index,
            "path": path,
            "sample": sample,
            "image": image if self.keep_image else None,
        }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the network owns the cores; workers decode and resize


def default_num_workers(num_files: int) -> int:
    """Decoding workers from the hardware: half the cores (at most 8), none for a single file."""
    if num_files <= 1:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def producer_key(producer: Mapping[str, Any]) -> str:
    """A short stable name of a producer record (the folder of its completion lists)."""
    text = json.dumps(producer, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def completed_stems(out_dir: Path, key: str | None = None) -> set[str]:
    """Stems listed as finished in ``out_dir`` under the record ``key`` (None: under any)."""
    root = out_dir / DONE_DIR
    if not root.is_dir():
        return set()
    listings = root.glob(f"{key}/*.txt") if key else [*root.glob("*/*.txt"), *root.glob("*.txt")]
    done: set[str] = set()
    for listing in listings:
        lines = listing.read_text().split("\n")
        done.update(line for line in lines[:-1] if line)  # a last line without "\n" was cut off
    return done


def claim_output_dir(out_dir: Path, producer: Mapping[str, Any], resume: bool) -> str:
    """Record ``producer`` in ``out_dir``; returns its key (the folder of its completion lists).

    With ``resume``, a folder holding finished outputs of another producer is refused (one line
    naming the difference and the two ways on); without, the other records are dropped (their
    outputs are recomputed). The record file is created exclusively, so concurrent shards of one
    job agree and two jobs with different settings cannot both claim a fresh folder.

    Raises:
        UserError: the folder's outputs were made by another checkpoint or other settings.
    """
    root = out_dir / DONE_DIR
    key = producer_key(producer)
    root.mkdir(parents=True, exist_ok=True)
    others = [p for p in root.iterdir() if p.name != key]
    finished = [p for p in others if _has_entries(p)]
    if finished and resume:
        old = _read_producer(finished[0])
        diff = (
            describe_difference(old, producer)
            if old is not None
            else ("made by an earlier version that did not record its checkpoint and settings")
        )
        raise UserError(
            f"output={out_dir} holds outputs of another run ({diff}): pass output=<a new folder>, "
            "or resume=false to recompute them with these settings"
        )
    for other in others:  # resume=false, or records without a finished image: superseded
        if other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
        else:
            other.unlink(missing_ok=True)
    folder = root / key
    folder.mkdir(exist_ok=True)
    record = folder / PRODUCER_FILE
    if not record.is_file():
        tmp = folder / f".{PRODUCER_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(producer, indent=2, sort_keys=True, default=str) + "\n")
        try:
            os.link(tmp, record)  # exclusive: the first shard's record stays
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return key


def _has_entries(path: Path) -> bool:
    if path.is_file():  # a completion list of a version without records
        return path.suffix == ".txt" and bool(path.read_text().strip())
    return any(bool(p.read_text().strip()) for p in path.glob("*.txt"))


def _read_producer(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((path / PRODUCER_FILE).read_text()))
    except (OSError, ValueError):
        return None


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``key: old -> new`` for what differs between two producer records (the checkpoint in
    short, nested settings by their dotted names, e.g. ``inference.fusion.decoder``)."""
    parts = []
    if old.get("checkpoint") != new.get("checkpoint"):
        parts.append(
            f"checkpoint {_short_checkpoint(old.get('checkpoint'))} -> "
            f"{_short_checkpoint(new.get('checkpoint'))}"
        )
    a = _flat({k: v for k, v in old.items() if k != "checkpoint"}, "")
    b = _flat({k: v for k, v in new.items() if k != "checkpoint"}, "")
    parts += [
        f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    return "; ".join(parts) or "same settings"


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _short_checkpoint(identity: Any) -> str:
    if not isinstance(identity, Mapping):
        return str(identity)
    return (
        f"{identity.get('name')} (step {identity.get('step')}, sha256 "
        f"{str(identity.get('sha256'))[:12]})"
    )


def run_on_files(
    predictor: Any,
    files: Sequence[Path],
    out_dir: str | Path,
    outputs: Sequence[Output],
    *,
    stems: Sequence[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    shard_by: str = "frame",
    resume: bool = True,
    num_workers: int | None = None,
    images_per_batch: int = 1,
    loader: Callable[[Path], np.ndarray] | None = None,
    progress: bool | None = None,
    producer: Mapping[str, Any] | None = None,
) -> FilesSummary:
    """Predict every image of ``files`` (this shard's share) and write ``outputs`` per image.

    Args:
        predictor: an ``EntityPredictor`` (``view_settings`` builds the views in workers,
            ``predict_samples`` runs network + fusion).
        files: the full sorted input list (``list_images``); ``shard`` selects this process's part.
        out_dir: created if needed; ``<stem><suffix>`` per output (a stem may hold folders,
            ``mirror_names``), and the completion lists in ``.cropformer_done/``.
        outputs: what to write per image (at least one).
        stems: output names (default ``output_stems(files)``, computed on the full list so every
            shard names an image the same way).
        shard_by: ``frame`` or ``scene`` (``shard_indices``).
        resume: skip images an earlier run finished (all outputs present and listed as done).
        num_workers: decoding/view-building processes (None: ``default_num_workers``).
        images_per_batch: images per forward pass (their views together).
        loader: image reader (default ``cropformer.data.decode.load_image``).
        progress: a progress bar (None: when stdout is a terminal; else a line every ~5 %).
        producer: what makes the outputs (checkpoint identity, settings that change pixels; no
            paths): recorded in the folder, which refuses to resume under another record
            (``claim_output_dir``).

    Returns:
        A ``FilesSummary``; unreadable files are counted and named, not fatal.

    Raises:
        UserError: ``out_dir`` holds outputs of another producer and ``resume`` is set.
        Interrupted: Ctrl-C; the message says how many images are saved and how to resume.
    """
    if not outputs:
        raise ValueError("run_on_files needs at least one output to write")
    if images_per_batch < 1:
        raise ValueError(f"images_per_batch={images_per_batch} must be >= 1")
    if loader is None:
        from cropformer.data.decode import load_image

        loader = load_image
    started = time.perf_counter()
    out = Path(out_dir)
    key = claim_output_dir(out, dict(producer or {}), resume)
    stems = list(stems) if stems is not None else output_stems(files)
    indices = shard_indices(files, shard, shard_by)
    summary = FilesSummary(
        output_dir=out,
        total=len(indices),
        device=str(predictor.device),
        producer=dict(producer or {}),
    )
    done = completed_stems(out, key) if resume else set()
    todo: list[tuple[int, Path]] = []
    for i in indices:
        if stems[i] in done and all((out / f"{stems[i]}{o.suffix}").is_file() for o in outputs):
            summary.already_done += 1
        else:
            todo.append((i, files[i]))
    if summary.already_done:
        log.info(f"resuming: {summary.already_done} of {len(indices)} images already done")
    keep_image = any(o.needs_image for o in outputs)
    dataset = _ImageViews(todo, predictor.view_settings, loader, keep_image)
    workers = default_num_workers(len(todo)) if num_workers is None else int(num_workers)
    data = torch.utils.data.DataLoader(
        dataset,
        batch_size=images_per_batch,
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=2 if workers > 0 else None,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tag = "all" if shard == (0, 1) else f"shard-{shard[0]}-of-{shard[1]}"
    report = _Progress(len(todo), progress)
    try:
        with (out / DONE_DIR / key / f"{tag}.txt").open("a" if resume else "w") as done_list:
            for items in data:
                _predict_and_write(predictor, items, stems, out, outputs, done_list, summary)
                report.step(len(items))
    except KeyboardInterrupt:
        report.close()
        done_now = summary.already_done + summary.processed
        raise Interrupted(
            f"predict stopped after {summary.processed} new images; {done_now} of "
            f"{summary.total} images are complete in {out} (partial files are never left); "
            "run the same command again to resume"
        ) from None
    report.close()
    summary.seconds = time.perf_counter() - started
    summary.peak_memory_mb = _peak_memory_mb(predictor.device)
    return summary


def _predict_and_write(
    predictor: Any,
    items: Sequence[dict[str, Any]],
    stems: Sequence[str],
    out: Path,
    outputs: Sequence[Output],
    done_list: Any,
    summary: FilesSummary,
) -> None:
    """One batch of decoded images: predict, write each output atomically, list as done."""
    readable = [it for it in items if "error" not in it]
    for it in items:
        if "error" in it:
            log.warning(f"skipping unreadable file {it['path']}: {it['error']}")
            summary.unreadable.append((str(it["path"]), it["error"]))
    preds = predictor.predict_samples([it["sample"] for it in readable]) if readable else []
    for it, pred in zip(readable, preds):
        result = PredictedFile(it["index"], Path(it["path"]), stems[it["index"]], pred, it["image"])
        (out / result.stem).parent.mkdir(parents=True, exist_ok=True)  # mirror layout: sub-folders
        for o in outputs:
            _write_atomically(out / f"{result.stem}{o.suffix}", o, result)
        # listed only once every output is in place: a crash before leaves it undone
        done_list.write(result.stem + "\n")
        done_list.flush()
        summary.processed += 1


def _write_atomically(final: Path, output: Output, result: PredictedFile) -> None:
    with atomic_path(final) as tmp:  # same suffix: writers pick the format from it (PIL)
        output.write(tmp, result)


def _peak_memory_mb(device: torch.device | str) -> float:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kB (main process)
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


class _Progress:
    """A tqdm bar on a terminal; otherwise one log line per ~5 % (job logs stay short)."""

    def __init__(self, total: int, bar: bool | None) -> None:
        self.total, self.count, self.next_line = total, 0, 0
        self.bar: Any = None
        if bar if bar is not None else sys.stdout.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="predict", unit="img", dynamic_ncols=True)
        self.every = max(1, total // 20)

    def step(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.count >= self.next_line and self.total:
            print(f"[{self.count}/{self.total}] images", flush=True)
            self.next_line = self.count + self.every

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``size`` items (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
