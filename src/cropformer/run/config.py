"""Locate the Hydra config tree and compose configs outside ``@hydra.main`` (tests, tools)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from cropformer.utils.errors import UserError

CONF_ENV = "CROPFORMER_CONF_DIR"


def find_conf_dir() -> Path:
    """The config tree: ``$CROPFORMER_CONF_DIR`` if set, else the one shipped in the package
    (``cropformer/conf``: a link to the repository's ``conf/`` in a checkout, real files in a
    wheel), else ``conf/`` in the current directory or one of its parents.
    """
    env = os.environ.get(CONF_ENV)
    if env:
        path = Path(env).expanduser().resolve()
        if not (path / "train.yaml").is_file():
            raise UserError(
                f"{CONF_ENV}={env} has no train.yaml; point it at the repository's conf/"
            )
        return path
    candidates = [Path(__file__).resolve().parents[1] / "conf"]
    cwd = Path.cwd().resolve()
    candidates += [p / "conf" for p in (cwd, *cwd.parents)]
    for path in candidates:
        if (path / "train.yaml").is_file():
            return path.resolve()
    raise UserError(
        "cannot find the config tree (conf/train.yaml): the package lacks cropformer/conf (a "
        f"broken install?); reinstall it or set {CONF_ENV}=/path/to/repo/conf"
    )


def project_root_of(conf_dir: Path) -> Path:
    """``PROJECT_ROOT`` for a config tree: its checkout (a folder with pyproject.toml), else the
    current directory (an installed package: logs/ never go into site-packages)."""
    parent = Path(conf_dir).resolve().parent
    return parent if (parent / "pyproject.toml").is_file() else Path.cwd()


def compose_config(
    overrides: list[str] | None = None, config_name: str = "train", conf_dir: Path | None = None
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style overrides.

    ``hydra:`` run-time interpolations are not available outside ``@hydra.main``, so
    ``paths.output_dir`` should be overridden when the composed config is used to run something.
    """
    conf_dir = conf_dir or find_conf_dir()
    os.environ.setdefault("PROJECT_ROOT", str(project_root_of(conf_dir)))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(
            config_name=config_name, overrides=list(overrides or []), return_hydra_config=False
        )
    return cfg
