"""Print the resolved config as a tree (and save it in the run directory)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

DEFAULT_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def print_config_tree(
    cfg: DictConfig,
    order: Sequence[str] = DEFAULT_ORDER,
    resolve: bool = False,
    save_to: str | Path | None = None,
    show: bool = True,
) -> None:
    """Show each top-level group of ``cfg`` as a tree branch; write the text to ``save_to``."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = (
            OmegaConf.to_yaml(node, resolve=resolve) if isinstance(node, DictConfig) else str(node)
        )
        branch.add(rich.syntax.Syntax(text, "yaml"))
    if show:
        rich.print(tree)
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            rich.print(tree, file=f)
