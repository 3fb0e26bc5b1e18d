"""Train CropFormer / Mask2Former. `python train.py --help` lists the config groups."""

from pathlib import Path

if __name__ == "__main__":
    from cropformer.cli.commands import run_command

    # the same code as the installed `cropformer-train`; runs go under this repository's logs/
    ROOT = Path(__file__).resolve().parent
    run_command("train", project_root=ROOT, conf_dir=ROOT / "conf")
