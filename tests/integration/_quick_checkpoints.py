"""Checkpoints in seconds, without training: a tiny network at its initial weights saved the way
training saves it (Lightning ``Trainer.save_checkpoint``), or as a converted file."""

from __future__ import annotations

from pathlib import Path

import torch

from cropformer.run.config import compose_config

#: tiny views: a frame of 48 x 64 becomes one 32 x 43 view (Mask2Former: no crops)
QUICK_MODEL = ["model=mask2former_tiny", "data/crop=none"]
QUICK_VIEWS = ["data.test_short_side=32", "data.test_max_size=48"]


def lightning_checkpoint(path: Path, overrides: list[str] | None = None, seed: int = 0) -> Path:
    """A checkpoint of this platform (state dict, hyper-parameters, data config), untrained."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose_config([*(overrides or QUICK_MODEL), *QUICK_VIEWS])
    torch.manual_seed(seed)
    module = instantiate(cfg.model, _recursive_=False)
    module.set_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def converted_checkpoint(path: Path, model: str = "mask2former_tiny", seed: int = 0) -> Path:
    """A converted file (``{"model": <config name>, "state_dict": net.*}``): rebuilt from the
    packaged model config, so it needs the config tree."""
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    net = instantiate(compose_config([f"model={model}"]).model.net)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "state_dict": state}, path)
    return path
