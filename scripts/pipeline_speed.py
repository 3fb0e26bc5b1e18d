"""Speed of the official-demo replacement: the whole pipeline against the network alone, in one run.

Mask2Former-HorNet-L at official shapes (HorNet-L GF, 200 queries; random weights, seeded) over a
ScanNet-style scene of 1296x968 colour frames, written as the official demo's id maps
(``output_format=official_demo``, mirror layout):

    python scripts/pipeline_speed.py --frames 3 [--device cpu] [--out DIR]

For every frame, in alternating order (so a change of machine load hits both alike):

- ``pipeline``: ``Segmenter.predict_files`` on that frame with ``output_format=official_demo``,
  ``output_layout=mirror`` (what ``predict.py`` runs): decode, the official Mask2Former test view
  (short side 800, long side at most 1333: 1071x800), the network, the fusion at 1296x968, the id
  map and its PNG, the completion list;
- ``network``: the same network's forward on that frame's view tensor, built beforehand: the part
  every implementation (the official demo included) pays at this view.

It prints one JSON line: images/s of each, their time ratio (pipeline / network, the overhead of
everything around the network), the load average before and after, and the machine. On a shared
machine the images/s are lower bounds; the ratio is the figure to compare. A first frame is a
warm-up and not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=3, help="timed frames (one scene)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    from hydra.utils import instantiate

    from cropformer.api import CheckpointInfo, Segmenter
    from cropformer.data.collate import collate
    from cropformer.data.decode import load_image_detectron2
    from cropformer.inference.predictor import EntityPredictor
    from cropformer.run.config import compose_config

    root = Path(args.out or tempfile.mkdtemp(prefix="pipeline_speed_"))
    color = root / "scans" / "scene0000_00" / "color"
    color.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(args.frames + 1):
        img = rng.integers(0, 255, (968, 1296, 3), dtype=np.uint8)
        Image.fromarray(img).save(color / f"{i}.jpg", quality=90)

    cfg = compose_config(["model=mask2former_hornetl", "paths.output_dir=."])
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    predictor = EntityPredictor(
        net,
        instantiate(cfg.model.fusion),
        short_side=800,
        max_size=1333,
        num_crops=0,
        device=args.device,
    )
    info = CheckpointInfo(
        path=Path("random-weights"),
        kind="random",
        model="mask2former (hornet_l)",
        step=None,
        stored_views={},
    )
    seg = Segmenter(predictor, info, {}, output_mode="official_demo")
    frames = sorted(color.glob("*.jpg"), key=lambda p: int(p.stem))

    def network(frame: Path) -> float:
        batch = collate([predictor.views(load_image_detectron2(frame))])
        images = batch["images"].to(predictor.device)
        sizes = batch["view_sizes"].to(predictor.device)
        started = time.perf_counter()
        with torch.no_grad():
            net(images, num_views=1, view_sizes=sizes, **predictor.net_kwargs)
        return time.perf_counter() - started

    def pipeline(frame: Path) -> float:
        summary = seg.predict_files(
            [frame],
            root / "out",
            layout="mirror",
            resume=False,
            num_workers=0,
            progress=False,
        )
        assert summary.processed == 1
        return summary.seconds

    load_before = os.getloadavg()
    pipeline(frames[0])  # warm-up: first allocations, thread pools
    times: dict[str, list[float]] = {"pipeline": [], "network": []}
    for k, frame in enumerate(frames[1:]):
        order = ("pipeline", "network") if k % 2 == 0 else ("network", "pipeline")
        for name in order:
            times[name].append(pipeline(frame) if name == "pipeline" else network(frame))
    load_after = os.getloadavg()
    total = {k: sum(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "model": "mask2former_hornetl (random weights, official shapes)",
                "parameters": sum(p.numel() for p in net.parameters()),
                "frame": "1296x968 -> view 1071x800",
                "frames": args.frames,
                "pipeline_images_per_second": round(args.frames / total["pipeline"], 4),
                "network_images_per_second": round(args.frames / total["network"], 4),
                "pipeline_over_network": round(total["pipeline"] / total["network"], 3),
                "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
                "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                "device": str(predictor.device),
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "cpu": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
