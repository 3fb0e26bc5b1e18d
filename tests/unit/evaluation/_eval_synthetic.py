"""Small synthetic ground truth for the evaluation tests (label maps + COCO json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
from scipy import ndimage

from cropformer.evaluation.rle import decode_rle, encode_mask, rle_area

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
SHARED_GT = {
    # COCO panoptic segments as compressed RLE (annotation id 0 and crowd segments present)
    "shared": SHARED_DATA / "coco-panoptic-sample/sample_data/panoptic_coco_detection_format.json",
    # labelme VOC instances as polygons (image id 0, category 0 present)
    "labelme": SHARED_DATA / "labelme-voc/instance_segmentation/data_dataset_coco/annotations.json",
}


def label_map(h: int, w: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-overlapping rectangles of varied size painted into an id map (-1 = none)."""
    ids = np.full((h, w), -1, dtype=np.int32)
    for k in range(n):
        rh = int(rng.integers(3, max(4, h // 2)))
        rw = int(rng.integers(3, max(4, w // 2)))
        y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        ids[y : y + rh, x : x + rw] = k
    return ids


def make_gt(
    num_images: int = 4, seed: int = 0, sizes: tuple[tuple[int, int], ...] = ((120, 160),)
) -> tuple[dict, dict[int, np.ndarray]]:
    """A COCO-format ground truth with several categories and its label maps by image id."""
    rng = np.random.default_rng(seed)
    images, anns, maps = [], [], {}
    ann_id = 1
    for i in range(num_images):
        h, w = sizes[i % len(sizes)]
        image_id = 100 + i
        ids = label_map(h, w, rng, n=int(rng.integers(4, 9)))
        # renumber so that entity j is the j-th still-visible rectangle
        present = [k for k in np.unique(ids) if k >= 0]
        remap = np.full(ids.max() + 2, -1, dtype=np.int32)
        for j, k in enumerate(present):
            remap[k + 1] = j
        ids = remap[ids + 1]
        maps[image_id] = ids
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.jpg"})
        for j in range(len(present)):
            rle = encode_mask(ids == j)
            ys, xs = np.nonzero(ids == j)
            anns.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 40)),
                    "segmentation": rle,
                    "area": rle_area(rle),
                    "bbox": [
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() - xs.min() + 1),
                        float(ys.max() - ys.min() + 1),
                    ],
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 40)]
    return {"images": images, "annotations": anns, "categories": cats}, maps


def perfect_prediction(ids: np.ndarray) -> dict:
    """EntityPrediction equal to the ground-truth label map, decreasing scores."""
    n = int(ids.max()) + 1
    return {
        "id_map": torch.from_numpy(ids.astype(np.int32)),
        "scores": torch.linspace(0.9, 0.5, n),
        "query_indices": torch.arange(n),
    }


def perturbed_results(gt: dict, seed: int) -> list[dict]:
    """GT masks as predictions: eroded / dilated / shifted / dropped, plus false positives."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    results = []
    for a in gt["annotations"]:
        h, w = sizes[a["image_id"]]
        segm = a["segmentation"]
        if isinstance(segm, list):  # polygons
            segm = mask_util.merge(mask_util.frPyObjects(segm, h, w))
        m = decode_rle(segm)
        op = int(rng.integers(0, 5))
        if op == 1:
            m = ndimage.binary_erosion(m, iterations=2)
        elif op == 2:
            m = ndimage.binary_dilation(m, iterations=3)
        elif op == 3:
            m = np.roll(m, int(rng.integers(-9, 9)), axis=int(rng.integers(0, 2)))
        elif op == 4 and rng.random() < 0.5:
            continue
        results.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "score": float(rng.random()),
                "segmentation": encode_mask(m),
                "bbox": [0, 0, 0, 0],
            }
        )
    for image_id, (h, w) in sizes.items():
        for _ in range(5):
            m = np.zeros((h, w), dtype=bool)
            y, x = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
            m[y : y + int(rng.integers(2, 20)), x : x + int(rng.integers(2, 20))] = True
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 3,
                    "score": float(rng.random() * 0.5),
                    "segmentation": encode_mask(m),
                }
            )
    return results
