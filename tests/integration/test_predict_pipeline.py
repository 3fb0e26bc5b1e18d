"""predict.py as a 3D pipeline runs it: a ScanNet-style tree, the official demo's id maps in a
mirrored tree, every n-th frame, killed and resumed, and the Python API giving the same maps."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _integration_helpers import REPO, tiny_cfg
from _quick_checkpoints import lightning_checkpoint
from PIL import Image

from cropformer import load_segmenter
from cropformer.cli.predict import predict
from cropformer.inference.files import DONE_DIR
from cropformer.utils.errors import UserError

SCENES = ("scene0002_00", "scene0010_00")
FRAMES = tuple(range(0, 14))  # 0.jpg ... 13.jpg: natural order differs from the string order


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    rng = np.random.default_rng(11)
    for scene in SCENES:
        (root / "scans" / scene / "color").mkdir(parents=True)
        (root / "scans" / scene / "depth").mkdir()
        for f in FRAMES:
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            img[10:30, 8:40] = (200, 40, 40)  # one block, so there is something to segment
            Image.fromarray(img).save(root / "scans" / scene / "color" / f"{f}.jpg", quality=95)
            Image.fromarray(img[:, :, 0]).save(root / "scans" / scene / "depth" / f"{f}.png")
    ckpt = lightning_checkpoint(root / "tiny.ckpt")
    return root, ckpt


def _args(root: Path, ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"ckpt={ckpt}",
        f"input={root / 'scans'}/*/color",
        f"output={out}",
        f"paths.log_dir={root}/logs",
        "extras.print_config=false",
        "output_format=official_demo",
        "output_layout=mirror",
        "score_threshold=0.0",  # untrained weights: keep every entity so the maps are not empty
        "every=2",
        "num_workers=0",
        *extra,
    ]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and DONE_DIR not in p.parts
    }


def _listing(out: Path) -> Path:
    """The completion list of an unsharded run (``.cropformer_done/<record>/all.txt``)."""
    found = sorted((out / DONE_DIR).glob("*/all.txt"))
    return found[0] if found else out / DONE_DIR / "none" / "all.txt"


def _predict(root: Path, ckpt: Path, out: Path, *extra: str) -> dict:
    return predict(tiny_cfg(root, *_args(root, ckpt, out, *extra), name="predict"))


def test_official_demo_mirror_tree_killed_and_resumed_equals_one_run(scans):
    root, ckpt = scans
    one = root / "one"
    result = _predict(root, ckpt, one)
    tree = _tree(one)
    expected = sorted(f"{s}/color/{f}.png" for s in SCENES for f in FRAMES[::2])
    assert sorted(tree) == expected  # mirrored, every 2nd frame, no depth, no json by default
    assert result["processed"] == len(expected)
    assert result["output_mode"]["format"] == "official_demo"
    done = _listing(one).read_text().split("\n")[:-1]
    assert done[:3] == [f"{SCENES[0]}/color/{f}" for f in (0, 2, 4)]  # natural order
    assert done[5] == f"{SCENES[0]}/color/10"
    assert Image.open(one / SCENES[0] / "color" / "0.png").mode == "I;16"  # uint16 by default

    seg = load_segmenter(ckpt, device="cpu", output="official_demo")
    demo_all = {"format": "official_demo", "score_threshold": 0.0}
    for name in (f"{SCENES[0]}/color/0", f"{SCENES[1]}/color/12"):
        api = seg.id_map(root / "scans" / f"{name}.jpg", output=demo_all)
        assert int(api.max()) > 0
        assert np.array_equal(np.asarray(Image.open(one / f"{name}.png")), api)

    # the real command, killed (SIGKILL) after a few frames, then resumed
    killed = root / "killed"
    cmd = [sys.executable, "predict.py", *_args(root, ckpt, killed)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        listing = _listing(killed)
        if listing.is_file() and listing.read_text().count("\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = proc.communicate()
    listing = _listing(killed)
    assert listing.is_file(), err.decode()[-2000:]
    finished = listing.read_text().split("\n")[:-1]
    assert 2 <= len(finished) < len(expected), "the run ended before it could be killed"
    again = _predict(root, ckpt, killed)
    assert again["already_done"] == len(finished)
    assert again["processed"] == len(expected) - len(finished)
    assert _tree(killed) == tree


def test_shard_by_scene_uint8_and_flat_names(scans, tmp_path):
    root, ckpt = scans
    seg = load_segmenter(ckpt, device="cpu")
    inputs = [root / "scans" / s / "color" for s in SCENES]
    mode = {"format": "official_demo", "score_threshold": 0.0, "id_dtype": "uint8"}
    for i in range(2):
        s = seg.predict_files(
            inputs,
            tmp_path / "sharded",
            output=mode,
            layout="mirror",
            every=6,
            shard=(i, 2),
            shard_by="scene",
            num_workers=0,
            progress=False,
        )
        assert s.processed == 3  # one scene each: frames 0, 6, 12
    written = sorted(
        p.relative_to(tmp_path / "sharded").as_posix()
        for p in (tmp_path / "sharded").rglob("*.png")
    )
    assert written == sorted(f"{s}/color/{f}.png" for s in SCENES for f in (0, 6, 12))
    assert all(Image.open(tmp_path / "sharded" / w).mode == "L" for w in written)
    flat = seg.predict_files(inputs, tmp_path / "flat", every=12, num_workers=0, progress=False)
    assert flat.processed == 4  # two frames per scene; stems repeat across scenes -> a__b names
    names = sorted(p.name for p in (tmp_path / "flat").glob("*_ids.png"))
    assert names[0].startswith("scene0002_00__color__0.jpg")
    with pytest.raises(UserError, match="output_layout='nested'"):
        seg.predict_files(inputs, tmp_path / "x", layout="nested")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("output_format=demo", "output_format='demo'"),
        ("every=0", "every=0"),
        ("id_dtype=int8", "id_dtype='int8'"),
        ("output_layout=nested", "output_layout='nested'"),
        ("shard_by=folder", "shard_by='folder'"),
        ("min_area=-5", "min_area=-5"),
        ("write.id_map_suffix=.tif", "write.id_map_suffix='.tif'"),
    ],
)
def test_bad_pipeline_options_are_one_line_errors_before_any_run_folder(scans, extra, needle):
    root, ckpt = scans
    logs = root / "bad_logs"
    cfg = tiny_cfg(logs, *_args(root, ckpt, root / "bad", extra), name="predict")
    with pytest.raises(UserError, match=re.escape(needle)):
        predict(cfg)
    assert not (root / "bad").exists()
