"""Row 5: entity AP over many large images, our metric vs the official evaluation's steps.

Reference = what the official evaluation does with detectron2: per output a Fortran-order uint8
copy of the binary mask and ``pycocotools.mask.encode`` (results without boxes), then a C++
COCOeval (``segm``): detectron2 uses its own ``COCOeval_opt``; not installed here, so
faster-coco-eval's ``COCOeval_faster`` stands in (same algorithm, C++ per-image evaluation).
pycocotools' pure-Python ``COCOeval`` can be timed as well (``run(python_cocoeval=True)``; a
note, not the ratio). Ours = ``EntityAPMetric.update`` on the id maps (the encode) + ``compute``
(the evaluation, default faster-coco-eval backend). Encode and evaluation are timed apart. Both
start from their natural prediction format (official: Q x H x W binary masks, built outside the
timed region; ours: the H x W id map) and must give identical AP.
"""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

from common import failed_row, fmt_s, make_row, run_isolated


def _grid_map(H: int, W: int, rows: int, cols: int, phases: Any, jitter: float) -> Any:
    """Label map of rows x cols wavy cells (every cell non-empty); ``phases`` per border."""
    import numpy as np

    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    r = np.zeros((H, W), np.int32)
    for i in range(1, rows):
        r += ys >= i * H / rows + jitter * H / rows * np.sin(xs / W * 6 + phases[i])
    c = np.zeros((H, W), np.int32)
    for j in range(1, cols):
        c += xs >= j * W / cols + jitter * W / cols * np.sin(ys / H * 5 + phases[rows + j])
    return r * cols + c


def make_data(num_images: int, H: int, W: int, seed: int = 0) -> tuple[dict[str, Any], list[Any]]:
    """GT: 6 x 8 = 48 entities per image (COCO dict). Predictions: 100-output id maps: the 48
    cells with perturbed borders (IoU ~0.6-0.95 with the GT) plus 52 random boxes painted over."""
    import numpy as np
    from pycocotools import mask as mask_util

    from cropformer.evaluation.rle import id_map_to_rles

    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for i in range(num_images):
        phases = rng.uniform(0, 6.3, 16)
        gt = _grid_map(H, W, 6, 8, phases, 0.1)
        K = 48
        for rle in id_map_to_rles(gt, K):  # setup only (not timed)
            if isinstance(rle["counts"], bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                }
            )
        images.append({"id": i + 1, "height": H, "width": W, "file_name": f"{i}.jpg"})
        pm = _grid_map(H, W, 6, 8, phases + rng.normal(0, 0.15, 16), 0.1 + 0.05 * rng.random())
        pm = pm.astype(np.int8)
        for k in range(48, 100):  # extra outputs: boxes (false positives or partial hits)
            bh, bw = int(rng.integers(H // 20, H // 6)), int(rng.integers(W // 20, W // 6))
            y, x = int(rng.integers(0, H - bh)), int(rng.integers(0, W - bw))
            pm[y : y + bh, x : x + bw] = k
        scores = rng.uniform(0.05, 1.0, 100).astype(np.float32)
        present = np.bincount(pm.ravel().astype(np.int64) + 1, minlength=101)[1:] > 0
        scores[~present] = 0.0  # as the official fusion: an empty output has score 0
        preds.append((pm, scores))
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "entity"}]}
    return gt, preds


def cached_data(num_images: int, H: int, W: int) -> tuple[dict[str, Any], list[Any]]:
    """``make_data`` stored under the temp dir, so the second process does not rebuild it."""
    import json
    import tempfile
    from pathlib import Path

    import numpy as np

    folder = Path(tempfile.gettempdir()) / f"cropformer_bench_ap_v1_{num_images}_{H}x{W}"
    if (folder / "done").is_file():
        gt = json.loads((folder / "gt.json").read_text())
        maps = np.load(folder / "maps.npy", mmap_mode="r")
        scores = np.load(folder / "scores.npy")
        return gt, [(np.asarray(maps[i]), scores[i]) for i in range(num_images)]
    gt, preds = make_data(num_images, H, W)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gt.json").write_text(json.dumps(gt))
    np.save(folder / "maps.npy", np.stack([p[0] for p in preds]))
    np.save(folder / "scores.npy", np.stack([p[1] for p in preds]))
    (folder / "done").touch()
    return gt, preds


def measure(impl: str, num_images: int, height: int, width: int) -> dict[str, Any]:
    """Child: AP of one implementation; encode and evaluation timed apart.

    ``impl``: ``ours`` (``EntityAPMetric.update`` = encode, ``compute`` = evaluation),
    ``official_cpp`` (the official per-output encode, then faster-coco-eval's C++ COCOeval) or
    ``official_python`` (the same encode, then pycocotools' pure-Python ``COCOeval``).
    """
    import numpy as np
    import torch

    gt, preds = cached_data(num_images, height, width)
    encode_s = eval_s = 0.0
    if impl == "ours":
        from cropformer.evaluation.metric import EntityAPMetric

        metric = EntityAPMetric(gt)
        for i, (pm, scores) in enumerate(preds):
            pred = {
                "id_map": torch.from_numpy(pm.astype(np.int32)),
                "scores": torch.from_numpy(scores),
                "query_indices": torch.arange(100),
            }
            t = time.perf_counter()
            metric.update([pred], [i + 1])
            encode_s += time.perf_counter() - t
        t = time.perf_counter()
        res = metric.compute()
        eval_s = time.perf_counter() - t
        ap = {"AP": res["entity_ap"], "AP50": res["entity_ap50"], "AP75": res["entity_ap75"]}
        return {"time_s": encode_s + eval_s, "encode_s": encode_s, "eval_s": eval_s, **ap}
    if impl not in ("official_cpp", "official_python"):
        raise ValueError(f"impl={impl!r}: ours, official_cpp or official_python")
    from pycocotools import mask as mask_util

    results = []
    for i, (pm, scores) in enumerate(preds):
        masks = pm[None] == np.arange(100, dtype=np.int8)[:, None, None]  # (Q, H, W) bool
        t = time.perf_counter()
        for k in range(100):  # detectron2's instances_to_coco_json, one output at a time
            rle = mask_util.encode(np.array(masks[k][:, :, None], order="F", dtype="uint8"))[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": 1,
                    "segmentation": rle,
                    "score": float(scores[k]),
                }
            )
        encode_s += time.perf_counter() - t
        del masks
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if impl == "official_cpp":
            from faster_coco_eval import COCO, COCOeval_faster

            coco = COCO(gt)
            ev: Any = COCOeval_faster(coco, coco.loadRes(results), "segm")
        else:
            import pycocotools.coco
            from pycocotools.cocoeval import COCOeval

            coco = pycocotools.coco.COCO()
            coco.dataset = gt
            coco.createIndex()
            ev = COCOeval(coco, coco.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    eval_s = time.perf_counter() - t
    ap = {"AP": 100 * ev.stats[0], "AP50": 100 * ev.stats[1], "AP75": 100 * ev.stats[2]}
    return {"time_s": encode_s + eval_s, "encode_s": encode_s, "eval_s": eval_s, **ap}


def run(quick: bool = False, device: str = "cpu", python_cocoeval: bool = False) -> list[dict]:
    """One row; ``python_cocoeval`` also times pycocotools' pure-Python COCOeval (note only)."""
    n, H, W = (20 if quick else 100), 1800, 2700
    kw = {"num_images": n, "height": H, "width": W}
    ours = run_isolated("row5_eval", "measure", {"impl": "ours", **kw})
    ref = run_isolated("row5_eval", "measure", {"impl": "official_cpp", **kw})
    py = (
        run_isolated("row5_eval", "measure", {"impl": "official_python", **kw})
        if (python_cocoeval)
        else None
    )
    if "error" in ours or "error" in ref:
        return [
            failed_row(
                "5",
                "Entity AP",
                str(ours.get("error") or ref.get("error"))[:300],
                target=">= 3x, identical AP",
                inputs=f"{n} x {W}x{H}",
            )
        ]
    same = all(abs(ours[k] - ref[k]) < 1e-9 for k in ("AP", "AP50", "AP75"))
    ratio = ref["time_s"] / ours["time_s"]
    note = (
        f"Split: encode ours {fmt_s(ours['encode_s'])} vs reference {fmt_s(ref['encode_s'])} "
        f"(pycocotools.mask.encode of each output's Fortran-order uint8 mask, as detectron2's "
        f"instances_to_coco_json); evaluation ours {fmt_s(ours['eval_s'])} vs reference "
        f"{fmt_s(ref['eval_s'])}. The reference's evaluation is faster-coco-eval's C++ COCOeval "
        "(the official evaluator uses detectron2's C++ COCOeval_opt, not installed here); ours "
        "evaluates with the same C++ library by default, so the ratio comes from the encode. "
        f"Peak RSS: ours {ours['peak_rss_gb']:.2f} GB, reference {ref['peak_rss_gb']:.2f} GB."
    )
    if py and "error" not in py:
        note += (
            f" With pycocotools' pure-Python COCOeval instead the reference takes "
            f"{fmt_s(py['time_s'])} (evaluation {fmt_s(py['eval_s'])}, AP "
            f"{py['AP']:.4f})."
        )
    else:
        note += " pycocotools' pure-Python COCOeval is not timed by default."
    return [
        make_row(
            "5",
            f"Entity AP over {n} images (encode + COCOeval)",
            reference=(
                f"official encode + C++ COCOeval {fmt_s(ref['time_s'])} "
                f"(encode {fmt_s(ref['encode_s'])}, eval {fmt_s(ref['eval_s'])})"
            ),
            ours=(
                f"{fmt_s(ours['time_s'])} (encode {fmt_s(ours['encode_s'])}, eval "
                f"{fmt_s(ours['eval_s'])})"
            ),
            ratio=ratio,
            target=">= 3x, identical AP",
            meets_target=ratio >= 3.0,
            check_passed=same,
            in_run=True,
            statistic="single run each (one process per side)",
            inputs=f"{n} images of {W}x{H}, 48 GT entities and 100 predictions each",
            check=(
                f"AP / AP50 / AP75 ours {ours['AP']:.4f} / {ours['AP50']:.4f} / "
                f"{ours['AP75']:.4f}, "
                f"reference {ref['AP']:.4f} / {ref['AP50']:.4f} / {ref['AP75']:.4f} "
                f"({'identical' if same else 'DIFFERENT'}, tolerance 1e-9)"
            ),
            note=note,
            ours_s=ours["time_s"],
            reference_s=ref["time_s"],
            ours_encode_s=ours["encode_s"],
            ours_eval_s=ours["eval_s"],
            reference_encode_s=ref["encode_s"],
            reference_eval_s=ref["eval_s"],
            reference_python_cocoeval_s=None if not py or "error" in py else py["time_s"],
        )
    ]
