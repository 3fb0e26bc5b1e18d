"""A tiny checkpoint (the session's ``tiny_run``) goes through eval.py and predict.py end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _integration_helpers import (
    TINY_DATA,
    gt_json_of,
    reference_entity_ap,
    run_script,
    tiny_cfg,
)
from PIL import Image

from cropformer.cli.eval import evaluate
from cropformer.cli.predict import predict
from cropformer.evaluation.writers import read_id_map_png


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The session's short fit (conftest): ``(tmp, summary)``, its run under ``tmp/logs``."""
    return tiny_run


@pytest.fixture(scope="module")
def data_dir(tiny_run_data) -> Path:
    """The data the shared run trained and validated on."""
    return tiny_run_data


def test_eval_reproduces_the_metrics_logged_at_the_end_of_training(trained, data_dir):
    tmp, summary = trained
    cfg = tiny_cfg(tmp, f"ckpt={summary['last_checkpoint']}", name="eval", data_dir=data_dir)
    result = evaluate(cfg)
    assert result["entity_num_images"] == 2
    for key in ("entity_ap", "entity_ap50", "entity_ap75"):
        assert result[key] == pytest.approx(summary[f"val_{key}"], abs=1e-6)
    run_dir = Path(result["run_dir"])
    assert json.loads((run_dir / "metrics.json").read_text())["entity_ap"] == result["entity_ap"]
    results = json.loads((run_dir / "coco_instances_results.json").read_text())
    assert all(r["category_id"] == 1 and "counts" in r["segmentation"] for r in results)


def test_eval_ckpt_last_and_fusion_override(trained, data_dir):
    tmp, summary = trained
    results = {}
    for mode in ("B-O", "I-O"):
        cfg = tiny_cfg(
            tmp, "ckpt=last", f"inference.fusion.decoder={mode}", name="eval", data_dir=data_dir
        )
        result = evaluate(cfg)
        assert result["checkpoint"] == str(Path(summary["last_checkpoint"]))
        # the logged AP is the AP of the written predictions, recomputed by stock pycocotools
        reference = reference_entity_ap(Path(result["results_json"]), gt_json_of(cfg))
        assert result["entity_ap"] == pytest.approx(reference, abs=1e-4)
        results[mode] = json.loads(Path(result["results_json"]).read_text())
    # the override reached the fusion: the batch-level full view (B-O) and the image-level
    # pass (I-O, top-100 queries of the full view) are different predictions
    scores = {m: sorted(round(r["score"], 6) for r in rs) for m, rs in results.items()}
    assert scores["B-O"] != scores["I-O"]


def test_eval_test_time_multirun(trained, data_dir):
    tmp, summary = trained
    result = run_script(
        "eval.py",
        "-m",
        f"ckpt={summary['last_checkpoint']}",
        *TINY_DATA,
        "extras.print_config=false",
        "inference.fusion.decoder=B-O,B-OC",
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={data_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = next((tmp / "logs" / "eval" / "multiruns").iterdir())
    for job in ("0", "1"):
        assert "entity_ap" in json.loads((sweep / job / "metrics.json").read_text())


def test_predict_large_jpeg_alpha_png_and_unreadable_file(trained, tmp_path):
    tmp, summary = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    big = np.zeros((2000, 3000, 3), np.uint8)
    big[:, :1500] = (200, 40, 40)
    big[:, 1500:] = (40, 40, 200)
    big[700:1300, 1000:2000] = rng.integers(0, 255, (600, 1000, 3), dtype=np.uint8)
    Image.fromarray(big).save(inputs / "big.jpg", quality=90)
    rgba = np.zeros((300, 400, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(inputs / "alpha.png")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out"
    cfg = tiny_cfg(
        tmp,
        f"ckpt={summary['last_checkpoint']}",
        f"input={inputs}",
        f"output={out}",
        "write.overlay=true",
        "inference.fusion.decoder=B-O",
        name="predict",
    )
    result = predict(cfg)
    assert result["processed"] == 2 and result["unreadable"] == 1
    assert result["unreadable_files"] == [str(inputs / "broken.jpg")]
    for stem, (h, w) in {"big": (2000, 3000), "alpha": (300, 400)}.items():
        ids = read_id_map_png(out / f"{stem}_ids.png")
        assert ids.shape == (h, w)
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.size[0] >= w
        doc = json.loads((out / f"{stem}.json").read_text())
        assert (doc["height"], doc["width"]) == (h, w)
        assert {a["id"] for a in doc["annotations"]} <= set(np.unique(ids[ids >= 0]) + 1)


def test_predict_cli_without_input_is_one_readable_error(trained):
    tmp, summary = trained
    result = run_script(
        "predict.py", f"ckpt={summary['last_checkpoint']}", f"paths.log_dir={tmp}/logs"
    )
    assert result.returncode == 2
    assert "input" in result.stderr and "Traceback" not in result.stderr


def test_predict_cli_bad_view_chunk_is_one_readable_error(trained, tmp_path):
    tmp, summary = trained
    result = run_script(
        "predict.py",
        f"ckpt={summary['last_checkpoint']}",
        f"input={tmp_path}",
        "view_chunk=0",
        f"paths.log_dir={tmp}/logs",
    )
    assert result.returncode == 2
    assert "view_chunk=0" in result.stderr and "Traceback" not in result.stderr


def _official_args(shared_dir) -> list[str]:
    bundle = shared_dir / "reference" / "parity"
    return [
        f"ckpt={bundle / 'official_state_dict.pth'}",
        f"official_config={bundle / 'config_full.yaml'}",
    ]


def test_official_checkpoint_through_predict_and_eval_without_conversion(
    trained, data_dir, shared_dir, tmp_path
):
    """An official detectron2 file as published (small configuration of the parity bundle)."""
    tmp, _ = trained
    image = shared_dir / "reference" / "parity" / "images" / "img_b.png"
    out = tmp_path / "out"
    cfg = tiny_cfg(
        tmp, *_official_args(shared_dir), f"input={image}", f"output={out}", name="predict"
    )
    result = predict(cfg)
    assert result["processed"] == 1 and result["settings"]["short_side"] == 256  # its yaml
    h, w = np.asarray(Image.open(image)).shape[:2]
    assert read_id_map_png(out / "img_b_ids.png").shape == (h, w)
    cfg = tiny_cfg(tmp, *_official_args(shared_dir), name="eval", data_dir=data_dir)
    metrics = evaluate(cfg)
    assert metrics["entity_num_images"] == 2
    reference = reference_entity_ap(Path(metrics["results_json"]), gt_json_of(cfg))
    assert metrics["entity_ap"] == pytest.approx(reference, abs=1e-4)


def test_readme_python_api_snippet_gives_predicts_id_map(trained, tmp_path):
    """The README's Python example runs as written (paths substituted) and equals predict.py."""
    tmp, summary = trained
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    rng = np.random.default_rng(3)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (150, 220, 3), dtype=np.uint8)).save(photo)
    code = snippet.replace("path/to/last.ckpt", str(summary["last_checkpoint"]))
    code = code.replace('"photo.jpg"', f'"{photo}"')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = tmp_path / "out"
    cfg = tiny_cfg(
        tmp, f"ckpt={summary['last_checkpoint']}", f"input={photo}", f"output={out}", name="predict"
    )
    predict(cfg)
    png = np.asarray(Image.open(out / "photo_ids.png")).astype(np.int32)
    assert np.array_equal(scope["ids"], png)
    doc = json.loads((out / "photo.json").read_text())
    assert [a["counts"] for a in (r["segmentation"] for r in scope["rles"])] == [
        a["segmentation"]["counts"] for a in doc["annotations"]
    ]


def test_eval_takes_the_shared_test_time_names(tmp_path):
    from cropformer.run.inference_settings import apply_to_data

    cfg = tiny_cfg(
        tmp_path,
        "ckpt=x",
        "inference.num_crops=0",
        "inference.short_side=96",
        "inference.fusion.decoder=B-O",
        name="eval",
    )
    apply_to_data(cfg, training=False)
    assert cfg.data.crop.num_test == 0 and cfg.data.test_short_side == 96
    assert cfg.data.test_max_size == 192  # untouched (TINY_DATA)


def _frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / f"f{i:04d}.png"
        )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()}


@pytest.mark.slow  # three predict.py processes over 200 images (~2-4 min on 2 cores)
def test_predict_killed_half_way_resumes_and_shards_equal_one_run(trained, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from _integration_helpers import REPO

    tmp, summary = trained
    frames = tmp_path / "frames"
    _frames(frames, 200)
    base = [
        sys.executable,
        "predict.py",
        f"ckpt={summary['last_checkpoint']}",
        f"input={frames}",
        f"paths.log_dir={tmp}/logs",
        "extras.print_config=false",
        "num_workers=1",
    ]
    one = tmp_path / "one"
    assert subprocess.run([*base, f"output={one}"], cwd=REPO, capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*base, f"output={killed}"], cwd=REPO, stdout=subprocess.DEVNULL)
    done_list = killed / ".cropformer_done" / "all.txt"
    while proc.poll() is None:
        if done_list.is_file() and done_list.read_text().count("\n") >= 100:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    first = done_list.read_text().split("\n")[:-1]
    assert 100 <= len(first) < 200, "the run finished before it could be killed"
    stamps = {p.name: p.stat().st_mtime_ns for p in killed.glob("*.json")}
    again = run_script(*base[1:], f"output={killed}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"({len(first)} already done" in again.stdout
    lines = done_list.read_text().split("\n")[:-1]
    assert sorted(lines) == sorted(f"f{i:04d}" for i in range(200))  # each image once
    assert {n: t for n, t in stamps.items() if n[:-5] in first} == {
        p.name: p.stat().st_mtime_ns for p in killed.glob("*.json") if p.name[:-5] in first
    }  # what was complete was not rewritten
    assert {k: v for k, v in _files(killed).items()} == _files(one)
    sharded = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        r = run_script(*base[1:], f"output={sharded}", f"shard={shard}")
        assert r.returncode == 0, r.stderr[-2000:]
    assert _files(sharded) == _files(one)
