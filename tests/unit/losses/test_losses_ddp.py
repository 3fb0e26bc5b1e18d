"""``num_masks`` is averaged over ranks: 2 CPU processes (gloo, forked as Lightning's ddp_fork)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _losses_helpers import make_pass, make_targets

from cropformer.losses.criterion import CropFormerCriterion, average_num_masks
from cropformer.losses.matcher import HungarianMatcher
from cropformer.losses.point_sampling import UniformPointSource

WORLD = 2
COUNTS = {0: [1, 2], 1: [3, 4]}  # entities per image on each rank: 3 and 7 -> mean 5


def _losses(rank: int) -> dict[str, torch.Tensor]:
    criterion = CropFormerCriterion(matcher=HungarianMatcher(num_points=32), num_points=32)
    criterion.set_point_source(UniformPointSource(torch.Generator().manual_seed(rank)))
    outputs = {
        "image_level": make_pass(2, 8, (8, 12), None, 2, seed=rank),
        "batch_level": make_pass(2, 8, (8, 12), 1, 2, seed=rank + 10),
    }
    targets = make_targets(COUNTS[rank], 1, (32, 48), seed=rank, invalid=0.0)
    return criterion(outputs, targets)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    local = _losses(rank)  # before the process group exists: num_masks = the local count
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        result = {
            "num_masks": average_num_masks(sum(COUNTS[rank]), torch.device("cpu")),
            "zero": average_num_masks(0, torch.device("cpu")),
            "local": local,
            "ddp": _losses(rank),
        }
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pth")


@pytest.mark.ddp
def test_num_masks_is_averaged_across_two_ranks(tmp_path: Path) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD,
        start_method="fork",
        join=True,
    )
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pth", weights_only=True)
        assert result["num_masks"] == 5.0
        assert result["zero"] == 1.0  # mean of 0 and 0, clamped to >= 1
        local_count = sum(COUNTS[rank])
        for key, value in result["ddp"].items():
            if key.startswith("loss_ce"):  # class loss does not use num_masks
                torch.testing.assert_close(value, result["local"][key])
            else:
                torch.testing.assert_close(value * 5.0, result["local"][key] * local_count)
