"""Predict entities for image files: input expansion, progress bar, writers, bad-file skipping.

The library side of ``predict.py``: ``expand_inputs`` turns a directory, a file, a glob or a list
into image paths, ``predict_files`` runs an ``EntityPredictor`` over them and writes, per image,
``<stem>_overlay.png`` (image | coloured entities), ``<stem>_ids.png`` (16-bit id map: 0 = none,
k + 1 = output k) and ``<stem>.json`` (COCO RLE with scores). Unreadable files are skipped with a
warning and counted.
"""

from __future__ import annotations

import glob
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cropformer.schema import EntityPrediction

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


def expand_inputs(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image paths from a directory (its image files, sorted), a file, a glob, or a list of them.

    Raises:
        FileNotFoundError: nothing matches (names the pattern).
    """
    if isinstance(spec, (list, tuple)):
        out: list[Path] = []
        for item in spec:
            out.extend(expand_inputs(item))
        return out
    s = str(spec)
    p = Path(s).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(
                f"no image files ({', '.join(IMAGE_SUFFIXES)}) in directory {p}"
            )
        return files
    if p.is_file():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
    if not matches:
        raise FileNotFoundError(
            f"input {s!r} is not a file or directory and matches no file as a glob "
            "(quote globs on the command line: input='photos/*.jpg')"
        )
    return matches


@dataclass
class PredictionSummary:
    """What ``predict_files`` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def num_ok(self) -> int:
        return len(self.written)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def predict_files(
    predictor: Any,
    paths: Sequence[str | Path],
    output_dir: str | Path,
    *,
    overlay: bool = True,
    id_map: bool = True,
    rle_json: bool = True,
    score_threshold: float = 0.0,
    progress: bool = True,
    loader: Callable[[str | Path], np.ndarray] | None = None,
) -> PredictionSummary:
    """Predict every image and write the requested outputs into ``output_dir``.

    Args:
        predictor: an ``EntityPredictor`` (anything with ``predict(image) -> EntityPrediction``).
        paths: image files (see ``expand_inputs``).
        output_dir: created if needed; files are named after each image's stem (a numeric suffix
            is added when two inputs share a stem).
        overlay, id_map, rle_json: which outputs to write.
        score_threshold: drop outputs scoring below this before writing (empty outputs are
            always dropped); ids are renumbered 1..M in score order of the fusion.
        progress: show a tqdm progress bar.
        loader: image reader (default ``cropformer.data.decode.load_image``).

    Returns:
        A ``PredictionSummary`` (written image paths, skipped files with the reason).
    """
    from cropformer.evaluation import writers

    if loader is None:
        from cropformer.data.decode import load_image

        loader = load_image
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PredictionSummary()
    used: set[str] = set()
    iterator: Any = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="predict", unit="img", dynamic_ncols=True)
    for raw in iterator:
        path = Path(raw)
        try:
            image = loader(path)
        except (OSError, ValueError) as err:  # FileNotFoundError, SampleError, decoder errors
            warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
            summary.skipped.append((path, str(err)))
            continue
        pred: EntityPrediction = predictor.predict(image)
        pred = writers.filter_prediction(pred, score_threshold=score_threshold, drop_empty=True)
        stem = _unique_stem(path.stem, used)
        if overlay:
            writers.write_overlay(out_dir / f"{stem}_overlay.png", image, pred)
        if id_map:
            writers.write_id_map_png(out_dir / f"{stem}_ids.png", pred)
        if rle_json:
            writers.write_rle_json(out_dir / f"{stem}.json", pred, file_name=str(path))
        summary.written.append(path)
    msg = f"predicted {summary.num_ok} image(s) into {out_dir}"
    if summary.num_skipped:
        msg += f"; skipped {summary.num_skipped} unreadable file(s)"
    log.info(msg)
    return summary


def _unique_stem(stem: str, used: set[str]) -> str:
    name, i = stem, 1
    while name in used:
        name = f"{stem}_{i}"
        i += 1
    used.add(name)
    return name
