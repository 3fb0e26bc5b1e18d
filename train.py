"""Train CropFormer / Mask2Former. `python train.py --help` lists the config groups."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Compose the config and hand it to the training task."""
    from cropformer.cli.train import main as run

    return run(cfg)


if __name__ == "__main__":
    from cropformer.cli.validate import check_command_line

    # unknown keys and bad values: one line, before Hydra creates a run folder
    check_command_line("train", Path(__file__).resolve().parent / "conf")
    main()
