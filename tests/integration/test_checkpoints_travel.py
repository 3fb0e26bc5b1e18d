"""Checkpoints that travel, ``ckpt=best`` after ``make train``, outputs keyed on their producer,
and the command boundary (one line per failure, Ctrl-C, unreadable inputs): issue 27."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _integration_helpers import REPO, TINY_RUN, run_script, tiny_cfg
from PIL import Image

from cropformer.cli.eval import evaluate
from cropformer.cli.predict import predict
from cropformer.cli.train import train
from cropformer.utils.errors import UserError

PRETRAINED = REPO / "benchmarks" / "embedded" / "mask2former_tiny_pretrain.pt"


@pytest.fixture(scope="module")
def made(tmp_path_factory, shared_dir) -> dict[str, Path]:
    """A tiny ``make train`` (both runs from an init file of their own), a plain train.py run and
    an official checkpoint converted by our script; returns the paths the tests need."""
    from cropformer.cli.main_job import main_job

    tmp = tmp_path_factory.mktemp("travel")
    data = tmp / "data"
    init = tmp / "init" / "pretrain.pt"
    init.parent.mkdir()
    shutil.copy(PRETRAINED, init)
    job = main_job(
        [
            *TINY_RUN,
            f"paths.log_dir={tmp}/logs",
            f"paths.data_dir={data}",
            f"model.init_checkpoint={init}",
        ]
    )
    plain = train(tiny_cfg(tmp / "plain", "trainer.max_steps=2", data_dir=data))
    bundle = shared_dir / "reference" / "parity"
    converted = tmp / "converted" / "official_converted.pt"
    proc = run_script(
        "scripts/convert_official_checkpoint.py",
        str(bundle / "official_state_dict.pth"),
        str(converted),
        "--official-config",
        str(bundle / "config_full.yaml"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    def located(recorded: str) -> Path:  # summary paths are written relative to the log root
        assert recorded.startswith("<log_dir>/"), recorded
        return tmp / "logs" / recorded.removeprefix("<log_dir>/")

    return {
        "tmp": tmp,
        "data": data,
        "init": init,
        "job": located(job["run_dir"]),
        "main_job": located(job["runs"]["cropformer"]) / "checkpoints" / "last.ckpt",
        "main_job_m2f": located(job["runs"]["mask2former"]) / "checkpoints" / "last.ckpt",
        "plain": Path(plain["last_checkpoint"]),
        "converted": converted,
    }


@contextlib.contextmanager
def hidden(*paths: Path) -> Iterator[None]:
    """The files/folders are gone (renamed) inside the block, back afterwards."""
    moved = [(p, p.with_name(p.name + ".hidden")) for p in paths]
    for a, b in moved:
        a.rename(b)
    try:
        yield
    finally:
        for a, b in moved:
            b.rename(a)


def _image(path: Path, seed: int, size: tuple[int, int] = (200, 150)) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = (180, 50, 40)
    arr[size[1] // 3 :, size[0] // 3 :] = rng.integers(0, 255, 3, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("kind", ["main_job", "plain", "converted"])
def test_a_moved_checkpoint_loads_predicts_evaluates_and_trains(made, kind, tmp_path, caplog):
    from cropformer import load_segmenter

    moved = tmp_path / "moved" / made[kind].name
    moved.parent.mkdir()
    shutil.copy(made[kind], moved)
    # the init weights and the whole run folder are gone (the converted file has neither)
    gone = {
        "main_job": [made["init"], made["job"]],
        "plain": [made["plain"].parents[1]],
        "converted": [],
    }[kind]
    image = _image(tmp_path / "in" / "photo.png", 0)
    with hidden(*gone), caplog.at_level("INFO"):
        seg = load_segmenter(moved, device="cpu", short_side=128, max_size=192)
        assert seg(image).id_map().shape == (150, 200)

        out = tmp_path / "out"
        cfg = tiny_cfg(tmp_path, f"ckpt={moved}", f"input={image}", f"output={out}", name="predict")
        assert predict(cfg)["processed"] == 1 and (out / "photo_ids.png").is_file()

        result = evaluate(tiny_cfg(tmp_path, f"ckpt={moved}", name="eval", data_dir=made["data"]))
        assert 0.0 <= result["entity_ap"] <= 100.0 and result["checkpoint"] == str(moved)

        if kind == "converted":
            # an official file's network is not one of our configs: train.py starts from its
            # weights when the command's model fits them (here: our own weights, converted form)
            weights = tmp_path / "moved" / "ours_converted.pt"
            state = torch.load(made["plain"], map_location="cpu", weights_only=False)
            torch.save({"state_dict": state["state_dict"], "model": "cropformer_tiny"}, weights)
            start = weights
        else:
            start = moved
        step = int(torch.load(start, map_location="cpu", weights_only=False).get("global_step", 0))
        summary = train(
            tiny_cfg(
                tmp_path,
                f"ckpt={start}",
                f"trainer.max_steps={step + 2}",
                data_dir=made["data"],
            )
        )
        assert summary["steps"] == step + 2
    messages = [r.getMessage() for r in caplog.records]
    # "start from scratch" is a training-start line: loading a checkpoint never says it
    assert not any("start from scratch" in m for m in messages)
    # nothing inside the checkpoint was needed: the init file and the run folder were gone
    assert not any("init_checkpoint" in m and "not found" in m for m in messages)


def test_init_weights_are_read_when_training_starts_never_when_built(tmp_path, caplog):
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    init = tmp_path / "pretrain.pt"
    shutil.copy(PRETRAINED, init)
    cfg = compose_config(["model=cropformer_tiny", f"model.init_checkpoint={init}"])
    with caplog.at_level("INFO"):
        module = instantiate(cfg.model, _recursive_=False)
        assert not any("start from scratch" in r.getMessage() for r in caplog.records)
        before = {k: v.clone() for k, v in module.net.state_dict().items()}
        init.unlink()  # building (and loading a checkpoint) never reads it
        instantiate(cfg.model, _recursive_=False)
        shutil.copy(PRETRAINED, init)
        module.init_weights()  # what train.py calls when a training starts from scratch
    lines = [r.getMessage() for r in caplog.records if "start from scratch" in r.getMessage()]
    assert len(lines) == 1 and "association." in lines[0]
    changed = [k for k, v in module.net.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and not any(k.startswith("association.") for k in changed)


def test_eval_ckpt_best_after_make_train(made, caplog):
    tmp = made["tmp"]
    with pytest.raises(UserError) as err:  # the newest run holds two models: it asks which
        evaluate(tiny_cfg(tmp, "ckpt=best", name="eval", data_dir=made["data"]))
    line = str(err.value)
    assert "\n" not in line and "train_task=main_job/cropformer" in line
    assert "main_job/mask2former" in line
    with caplog.at_level("INFO"):
        result = evaluate(
            tiny_cfg(
                tmp,
                "ckpt=best",
                "train_task=main_job/mask2former",
                "data/crop=none",
                name="eval",
                data_dir=made["data"],
            )
        )
    taken = Path(result["checkpoint"])
    assert taken.parents[1] == made["main_job_m2f"].parents[1] and taken.name.startswith("best")
    assert any("[main_job/mask2former" in r.getMessage() for r in caplog.records)


def test_predict_refuses_to_resume_into_outputs_of_another_checkpoint_or_settings(made, tmp_path):
    image = _image(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "out"

    def run(*extra: str) -> dict:
        cfg = tiny_cfg(tmp_path, f"input={image}", f"output={out}", *extra, name="predict")
        return predict(cfg)

    first = run(f"ckpt={made['main_job']}")
    assert first["processed"] == 1
    before = (out / "a_ids.png").read_bytes()
    for extra, named in (
        ((f"ckpt={made['main_job_m2f']}",), "checkpoint last.ckpt"),
        (
            (f"ckpt={made['main_job']}", "inference.fusion.decoder=I-O"),
            "inference.fusion.decoder: B-OC -> I-O",
        ),
        ((f"ckpt={made['main_job']}", "inference.num_crops=0"), "inference.num_crops: 4 -> 0"),
    ):
        with pytest.raises(UserError) as err:
            run(*extra)
        assert named in str(err.value) and "resume=false" in str(err.value)
        assert (out / "a_ids.png").read_bytes() == before
    again = run(f"ckpt={made['main_job_m2f']}", "resume=false")
    assert (
        again["processed"] == 1
        and again["producer"]["checkpoint"]["sha256"] != (first["producer"]["checkpoint"]["sha256"])
    )


def test_trainer_error_is_one_line_with_error_txt(tmp_path):
    proc = run_script(
        "train.py",
        *TINY_RUN,
        "trainer.devices=-3",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: cannot build `trainer`") and "devices" in lines[0]
    assert "CONFIG" not in proc.stdout  # the config tree is shown only once the run is built
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / "error.txt").read_text().splitlines()[0] == lines[0]


def _predict_cmd(ckpt: Path, inputs: Path, out: Path, logs: Path) -> list[str]:
    return [
        sys.executable,
        "predict.py",
        f"ckpt={ckpt}",
        f"input={inputs}",
        f"output={out}",
        f"paths.log_dir={logs}",
        "inference.short_side=128",
        "inference.max_size=192",
    ]


def _predict_to_end(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ctrl_c_on_predict_is_one_line_and_the_resume_is_byte_identical(made, tmp_path):
    inputs = tmp_path / "in"
    for i in range(16):
        _image(inputs / f"img{i:02d}.png", i, size=(320, 240))
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    clean, out = tmp_path / "clean", tmp_path / "out"
    proc = _predict_to_end(_predict_cmd(made["plain"], inputs, clean, tmp_path / "logs"))
    # an unreadable input: the others are written, exit 3, the last line names the file
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "broken.jpg" in proc.stderr.strip().splitlines()[-1]

    child = subprocess.Popen(
        _predict_cmd(made["plain"], inputs, out, tmp_path / "logs"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a shell's background job starts with SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: give the child the terminal's default, as a user has it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if len(list(out.glob("*_ids.png"))) >= 2:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[1][-2000:]
    os.killpg(child.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole group
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr[-3000:]
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert "Traceback" not in stderr and lines[-1].startswith("interrupted: predict stopped")
    assert "run the same command again to resume" in lines[-1]

    resumed = _predict_to_end(_predict_cmd(made["plain"], inputs, out, tmp_path / "logs"))
    assert resumed.returncode == 3, resumed.stderr[-2000:]
    files = sorted(p.name for p in clean.iterdir() if p.is_file())
    assert files == sorted(p.name for p in out.iterdir() if p.is_file())
    assert all((clean / f).read_bytes() == (out / f).read_bytes() for f in files)
