"""``run_ranks``: run a function on 2 CPU ranks (gloo) in spawned processes and collect what each
rank returns, so a DDP test states only its per-rank work and its checks.

    def _work(rank: int, world: int) -> dict: ...   # top level: it is pickled into the children
    r0, r1 = run_ranks(_work, tmp_path)
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

Work = Callable[[int, int], dict[str, Any]]


def free_port() -> int:
    """A TCP port free on localhost now (the rendezvous of the ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, work: Work, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # two ranks on a 2-core machine
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = work(rank, world)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def run_ranks(work: Work, out_dir: Path, world: int = 2) -> list[dict[str, Any]]:
    """``work(rank, world)`` on ``world`` gloo ranks; returns each rank's result (JSON round-trip).

    ``work`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    mp.spawn(_rank_main, args=(world, free_port(), work, str(out_dir)), nprocs=world, join=True)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]
