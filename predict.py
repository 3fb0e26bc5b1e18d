"""Segment images into entities with a trained checkpoint. See --help."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> dict:
    """Compose the config and hand it to the prediction task."""
    from cropformer.cli.predict import main as run

    return run(cfg)


if __name__ == "__main__":
    main()
