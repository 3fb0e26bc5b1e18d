"""Evaluate a checkpoint (AP^e, boundary AP). `python eval.py --help` lists the config groups."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> dict:
    """Compose the config and hand it to the evaluation task."""
    from cropformer.cli.eval import main as run

    return run(cfg)


if __name__ == "__main__":
    from cropformer.cli.validate import check_command_line

    # unknown keys and bad values: one line, before Hydra creates a run folder
    check_command_line("eval", Path(__file__).resolve().parent / "conf")
    main()
