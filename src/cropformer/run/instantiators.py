"""Build callbacks and loggers from their config groups (each entry a ``_target_`` node)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Any]:
    """Every ``_target_`` entry of the callbacks group, skipping null ones."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node and "_target_" in node]


def wandb_has_api_key() -> bool:
    """Whether W&B can log online: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
        return auth.authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def instantiate_loggers(cfg: DictConfig | None, wandb_id: str | None = None) -> list[Any]:
    """Loggers of the logger group. W&B goes offline when no API key is configured."""
    if not cfg:
        return []
    loggers = []
    for name, node in cfg.items():
        if not node or "_target_" not in node:
            continue
        node = OmegaConf.to_container(node, resolve=True)
        assert isinstance(node, dict)
        if "WandbLogger" in str(node["_target_"]):
            if node.get("offline") is None:
                mode = os.environ.get("WANDB_MODE", "")
                node["offline"] = mode in ("offline", "dryrun") or (
                    mode != "online" and not wandb_has_api_key()
                )
                if node["offline"]:
                    log.info(
                        "W&B: no API key configured, logging offline to "
                        f"{node.get('save_dir')}/wandb; upload later with "
                        f"`wandb sync {node.get('save_dir')}/wandb/offline-run-*`"
                    )
            if wandb_id:
                node["id"] = wandb_id
                node["resume"] = "allow"
        log.info(f"logger {name!s}: {node['_target_']!s}")
        loggers.append(instantiate(node))
    return loggers
