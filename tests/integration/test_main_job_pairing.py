"""The two runs of ``make train`` share every setting except the model and its crop views."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from cropformer.run.config import compose_config

# the only keys allowed to differ: the model (association module, name) and the crop views
ALLOWED = ("model.", "data.crop.", "task_name", "tags")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


def _resolved(experiment: str) -> dict[str, Any]:
    cfg = compose_config([f"experiment={experiment}", "seed=4", "paths.output_dir=."])
    return _flat(OmegaConf.to_container(cfg, resolve=True))


def test_main_job_runs_differ_only_in_model_and_crops():
    cf, m2f = _resolved("embedded_cropformer"), _resolved("embedded_mask2former")
    differ = sorted(
        k for k in cf.keys() | m2f.keys() if cf.get(k, "<absent>") != m2f.get(k, "<absent>")
    )
    assert differ, "the two presets are identical: the comparison would be meaningless"
    outside = [k for k in differ if not k.startswith(ALLOWED)]
    assert not outside, f"settings that differ outside model/crops: {outside}"
    # the schedule, optimiser, view sizes, data and seeds are shared
    for key in (
        "trainer.max_steps",
        "model.optimizer.lr",
        "model.scheduler.warmup_steps",
        "data.train_short_sides",
        "data.test_short_side",
        "data.test_max_size",
        "data.seed",
        "data.synthetic.seed",
        "data.jpeg_draft",
        "seed",
        "model.init_checkpoint",
    ):
        assert key in cf and cf[key] == m2f[key], key
    # the model parts that differ are the association module only (and what names it)
    model_diff = [k for k in differ if k.startswith("model.")]
    assert all(
        k.startswith(("model.net.association", "model.net.num_views")) or "association" in k
        for k in model_diff
    ), model_diff
