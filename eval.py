"""Evaluate a checkpoint (AP^e, boundary AP). `python eval.py --help` lists the config groups."""

from pathlib import Path

if __name__ == "__main__":
    from cropformer.cli.commands import run_command

    # the same code as the installed `cropformer-eval`; runs go under this repository's logs/
    ROOT = Path(__file__).resolve().parent
    run_command("eval", project_root=ROOT, conf_dir=ROOT / "conf")
