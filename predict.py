"""Segment images into entities with a trained checkpoint. See --help."""

from pathlib import Path

if __name__ == "__main__":
    from cropformer.cli.commands import run_command

    # the same code as the installed `cropformer-predict`; runs go under this repository's logs/
    ROOT = Path(__file__).resolve().parent
    run_command("predict", project_root=ROOT, conf_dir=ROOT / "conf")
