"""Row 1: data loading, ours vs a re-creation of the official crop mapper's steps.

Reuses ``scripts/bench_data.py`` (fixture generator, the official training-sample steps, our
sample). Training sample = full view + 1 random crop with flip; evaluation sample = full view +
4 corner crops (the official eval mapper also decodes and resizes every annotation of the full
view and then discards it; the re-creation does the same). Ours builds the label maps of every
view in both modes. Masks are compared per entity and view, and the views' pixels are compared
(ours decodes JPEGs at a reduced scale by default; ``jpeg_draft=False`` gives the official
pixels and has its own rows). Each row gives the ratio in the run and against the official
loader's anchors (measured elsewhere), and its target must hold for both.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, failed_row, fmt_s, make_row, run_isolated, spread_text

sys.path.insert(0, str(REPO / "scripts"))


def official_eval_sample(record: Any, draw: Any) -> dict[str, Any]:
    """Official eval mapper steps: 5 image views; full-view annotations decoded and resized."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_util

    with Image.open(record.image_path) as im:
        image = np.asarray(im.convert("RGB"))
    views = []
    for v in draw.views:
        x0, y0, x1, y1 = v.box
        h, w = v.size
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        views.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR)))
    h, w = draw.views[0].size
    masks = []
    for e in record.entities:
        if e.iscrowd:
            continue
        m = np.ascontiguousarray(mask_util.decode(e.segmentation))
        masks.append(np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST)) > 0)
    return {"views": views, "masks": [np.stack(masks)]}


#: The official crop mapper on the anchors' machine (docs/official_perf_anchors.md section 4),
#: median seconds per sample: (width, height, mode) -> s.
ANCHOR_S = {
    (4000, 3000, "train"): 1.625,
    (4000, 3000, "eval"): 1.409,
    (8000, 6000, "train"): 55.8,
    (8000, 6000, "eval"): 38.2,
}

#: Why the re-created official steps run slower here than the anchors (cProfile, see PROFILE_DATE).
PROFILE_DATE = "2026-11-29"
PROFILE_NOTE = (
    f"Why the re-creation is slower than the anchors (cProfile, {PROFILE_DATE}, this machine, "
    "one 4000x3000 training sample): 72 % of its time is the transposing copy of each "
    "column-major decoded mask into row order (`np.ascontiguousarray`, 82 calls; the official "
    "code makes the same copy inside `Image.fromarray` via `ndarray.tobytes`, which costs the "
    "same here), 19 % the RLE decode (80 calls), 3 % the PIL resizes, 2 % the JPEG decode. "
    "The copy takes 3.8x the decode here against 1.6x in the anchors' profile (76 vs 47 ms per "
    "call at 48 MP): this strided, memory-bound copy is ~2.4x slower relative to the decode in "
    "this environment (numpy 2.4, AVX2 CPU; the anchors' numpy is not recorded). Making it "
    "faster would mean a different copy than the official code's, so the re-creation keeps the "
    "official operations and the row reports the ratio against the anchors next to the in-run "
    "one; the target must hold for both."
)


def _view_diff(ours: list[Any], ref: list[Any]) -> dict[str, float]:
    """Pixel differences of the image views (ours CHW tensors, reference HWC arrays)."""
    import numpy as np

    diffs = []
    for a, b in zip(ours, ref):
        a = a.permute(1, 2, 0).numpy() if hasattr(a, "permute") else np.asarray(a)
        if a.shape != b.shape:
            return {"max": float("inf"), "mean": float("inf"), "within2": 0.0}
        diffs.append(np.abs(a.astype(np.int16) - b.astype(np.int16)).ravel())
    d = np.concatenate(diffs)
    return {"max": float(d.max()), "mean": float(d.mean()), "within2": float((d <= 2).mean())}


def measure(width: int, height: int, entities: int, iters: int, ref_iters: int) -> dict[str, Any]:
    """Child: build the fixture, check masks and views, time both pipelines in both modes.

    Ours runs with the default reduced-scale JPEG decode and with ``jpeg_draft=False`` (the
    official pixels: full-size decode, then the resize); both are compared with the reference
    on the first draw (entity masks per view; the views' pixels).
    """
    import numpy as np
    from bench_data import make_fixture, official_sample, ours_sample

    from cropformer.data.dataset import EntityDataset
    from cropformer.data.formats.entityseg import read_entityseg
    from cropformer.data.view_sampler import ViewSampler

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ann = make_fixture(Path(tmp), width, height, entities, 0)
        out["fixture_s"] = time.perf_counter() - t0
        (record,) = read_entityseg(ann, Path(tmp))
        for mode in ("train", "eval"):
            train = mode == "train"
            sampler = ViewSampler(
                train=train, short_sides=(800,), max_size=1333, num_crops=1 if train else 4
            )
            ds = EntityDataset([record], sampler)
            ds_full = EntityDataset([record], sampler, jpeg_draft=False)
            rng = np.random.default_rng(0)
            draws = [sampler.draw(record.height, record.width, rng) for _ in range(iters)]
            ref_fn = official_sample if train else official_eval_sample
            # the first (timed) call of each is the one compared: at 8000x6000 the reference
            # takes minutes per sample
            times: dict[str, list[float]] = {"ours": [], "full": [], "ref": []}
            first: dict[str, Any] = {}
            for i, d in enumerate(draws):
                for key in ("ours", "full", "ref"):
                    if key == "ref" and i >= ref_iters:
                        continue
                    t = time.perf_counter()
                    if key == "ref":
                        res = ref_fn(record, d)
                    else:
                        res = ours_sample(ds if key == "ours" else ds_full, d)
                    times[key].append(time.perf_counter() - t)
                    if i == 0:
                        first[key] = res
            ref_m = first["ref"]["masks"]
            for key in ("ours", "full"):
                ours_m = first[key]["masks"]
                same = all(np.array_equal(a, b) for a, b in zip(ours_m, ref_m))
                out[f"{mode}_{key}_masks_equal"] = bool(same and len(ours_m) >= len(ref_m))
                out[f"{mode}_{key}_views"] = _view_diff(first[key]["views"], first["ref"]["views"])
            out[f"{mode}_masks_compared"] = int(sum(m.shape[0] for m in ref_m))
            del first
            for key, ts in times.items():
                out[f"{mode}_{key}_s"] = statistics.median(ts)
                out[f"{mode}_{key}_times"] = ts
    return out


def _views_text(v: dict[str, float]) -> str:
    return (
        f"view pixels vs the reference: mean |diff| {v['mean']:.2f}, max {v['max']:.0f} grey "
        f"levels, {100 * v['within2']:.1f} % within 2"
    )


def run(quick: bool = False, device: str = "cpu", sizes: str = "all") -> list[dict[str, Any]]:
    """Rows: {4000x3000 / 40, 8000x6000 / 200} x {train, eval}, plus `jpeg_draft=false` rows.

    ``sizes="small"`` runs only 4000x3000 (the 8000x6000 reference takes minutes per sample).
    """
    rows = []
    cases = [(4000, 3000, 40, 5.0, 5, 3), (8000, 6000, 200, 20.0, 3, 1)]
    if sizes == "small":
        cases = cases[:1]
    for W, H, K, target, iters, ref_iters in cases:
        if quick:
            iters, ref_iters = 2, 1
        r = run_isolated(
            "row1_data",
            "measure",
            {"width": W, "height": H, "entities": K, "iters": iters, "ref_iters": ref_iters},
        )
        for mode, label in (
            ("train", "training sample (full + 1 crop)"),
            ("eval", "evaluation sample (full + 4 crops)"),
        ):
            if "error" in r:
                rows.append(
                    failed_row(
                        "1",
                        f"Data, {label}, {W}x{H}",
                        r["error"][:300],
                        target=f">= {target:.0f}x",
                        inputs=f"{W}x{H} JPEG, {K} RLE entities",
                    )
                )
                continue
            ref, anchor = r[f"{mode}_ref_s"], ANCHOR_S[(W, H, mode)]
            stat = (
                f"median of {iters} (ours) / {ref_iters} (reference) samples, no warm-up, "
                "sides alternating per sample (anchors: median of 5 (4000x3000) or 3 after "
                "1 warm-up)"
            )
            for key in ("ours", "full"):
                o = r[f"{mode}_{key}_s"]
                ratio, ratio_anchor = ref / o, anchor / o
                same = r[f"{mode}_{key}_masks_equal"]
                draft = key == "ours"
                check = (
                    f"{r[f'{mode}_masks_compared']} entity masks of the reference "
                    f"{'all equal' if same else 'DIFFER'} to ours (first draw); "
                    + _views_text(r[f"{mode}_{key}_views"])
                )
                rows.append(
                    make_row(
                        "1",
                        f"Data, {label}, {W}x{H}"
                        + ("" if draft else ", `data.jpeg_draft=false` (official pixels)"),
                        reference=(
                            f"official steps re-created {fmt_s(ref)}; anchors {fmt_s(anchor)}"
                        ),
                        ours=f"{1 / o:.3g} samples/s ({o:.3f} s)",
                        ratio=ratio,
                        target=f">= {target:.0f}x in run and vs anchors, same masks"
                        if draft
                        else "report",
                        meets_target=(ratio >= target and ratio_anchor >= target)
                        if draft
                        else None,
                        check_passed=same,
                        in_run=True,
                        statistic=stat,
                        inputs=f"{W}x{H} JPEG, {K} RLE entities, short side 800",
                        check=check,
                        note=(
                            f"Ratio in run {ratio:.2f}x; against the official loader's anchors "
                            f"({anchor:.3g} s, measured elsewhere: "
                            "docs/official_perf_anchors.md section 4) "
                            f"{ratio_anchor:.2f}x. Re-created official steps here: "
                            f"{spread_text(r[f'{mode}_ref_times'])}. "
                            + (
                                "Ours decodes the JPEG at a reduced scale (`jpeg_draft`, "
                                "default): its views differ from the official pixels by the "
                                "figures in the check; the `jpeg_draft=false` row gives the "
                                "official pixels. "
                                if draft
                                else "Full-size JPEG decode then the resize, as officially. "
                            )
                            + PROFILE_NOTE
                        ),
                        ratio_vs_anchors=round(ratio_anchor, 3),
                        ours_s=o,
                        reference_s=ref,
                        anchor_s=anchor,
                        ours_times=r[f"{mode}_{key}_times"],
                        reference_times=r[f"{mode}_ref_times"],
                        views=r[f"{mode}_{key}_views"],
                    )
                )
    return rows
