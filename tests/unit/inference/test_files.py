"""The file loop behind predict.py: listing, naming, shards, resume after a crash, unreadable files.

A fake network keeps these fast: the predictions depend on the image content only, so every run
must give byte-identical outputs.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cropformer.evaluation.writers import read_id_map_png, write_id_map_png
from cropformer.inference.files import (
    DONE_DIR,
    PRODUCER_FILE,
    Output,
    completed_stems,
    every_nth,
    input_root,
    list_images,
    mirror_names,
    output_stems,
    parse_shard,
    run_on_files,
    select_shard,
    shard_indices,
)
from cropformer.inference.fusion import MultiViewFusion
from cropformer.inference.predictor import EntityPredictor
from cropformer.utils.errors import Interrupted, UserError


class RedNet(torch.nn.Module):
    """Query q marks pixels whose red value is above 32 * q: content-only predictions."""

    def __init__(self, num_queries: int = 4) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, images, num_views=1, view_sizes=None):
        N = images.shape[0]
        Q = self.num_queries
        red = images[:, 0].float()[:, None, ::4, ::4]
        thresholds = torch.arange(1, Q + 1, dtype=torch.float32).view(1, Q, 1, 1) * 48.0
        masks = (red - thresholds) / 8.0
        logits = torch.stack([torch.linspace(3, 0, Q), torch.zeros(Q)], -1).expand(N, Q, 2)
        B = N // num_views
        return {
            "image_level": {"pred_logits": logits, "pred_masks": masks, "aux_outputs": []},
            "batch_level": {
                "pred_logits": logits.reshape(B, num_views, Q, 2)[:, 0],
                "pred_masks": masks.reshape(B, num_views, Q, *masks.shape[-2:]).transpose(1, 2),
                "aux_outputs": [],
            },
        }


def _predictor() -> EntityPredictor:
    return EntityPredictor(RedNet(), MultiViewFusion(), short_side=32, max_size=48)


def _ids_output(log: list[str] | None = None, fail_after: int | None = None) -> Output:
    def write(path, result):
        if fail_after is not None and log is not None and len(log) >= fail_after:
            path.write_bytes(b"partial")  # a crash in the middle of writing
            raise KeyboardInterrupt("injected crash")
        write_id_map_png(path, result.prediction)
        if log is not None:
            log.append(result.stem)

    return Output("_ids.png", write)


def _json_output() -> Output:
    def write(path, result):
        path.write_text(json.dumps({"index": result.index, "file": str(result.path)}))

    return Output(".json", write)


def _make_images(folder, n: int, broken: tuple[int, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        name = folder / f"frame_{i:04d}.png"
        if i in broken:
            name.write_bytes(b"not an image")
            continue
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(name)


def _outputs(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_list_images_recursive_sorted_and_errors(tmp_path):
    _make_images(tmp_path / "in", 2)
    _make_images(tmp_path / "in" / "sub", 1)
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    names = [str(p.relative_to(tmp_path / "in")) for p in list_images(tmp_path / "in")]
    assert names == ["frame_0000.png", "frame_0001.png", "sub/frame_0000.png"]
    assert len(list_images(str(tmp_path / "in" / "*.png"))) == 2
    assert len(list_images([tmp_path / "in" / "frame_0000.png"] * 2)) == 1
    with pytest.raises(UserError, match="no image files found"):
        list_images(tmp_path / "in" / "*.tif")


def test_output_stems_are_unique(tmp_path):
    files = [tmp_path / "a" / "1.jpg", tmp_path / "b" / "1.jpg", tmp_path / "b" / "2.jpg"]
    assert output_stems(files[1:]) == ["1", "2"]
    assert output_stems(files) == ["a__1.jpg", "b__1.jpg", "b__2.jpg"]
    assert output_stems([tmp_path / "a.jpg", tmp_path / "a.png"]) == ["a.jpg", "a.png"]


def test_parse_and_select_shard():
    assert parse_shard(None) == (0, 1) and parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0", "-1/2", "1/2/3"):
        with pytest.raises(UserError, match="shard="):
            parse_shard(bad)
    parts = [select_shard(11, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(11))
    assert parts[0] == [0, 3, 6, 9]


def test_unreadable_files_are_counted_and_named(tmp_path):
    _make_images(tmp_path / "in", 5, broken=(1, 3))
    files = list_images(tmp_path / "in")
    summary = run_on_files(
        _predictor(), files, tmp_path / "out", [_ids_output()], num_workers=0, progress=False
    )
    assert summary.processed == 3
    assert [os.path.basename(f) for f, _ in summary.unreadable] == [
        "frame_0001.png",
        "frame_0003.png",
    ]
    assert all(reason for _, reason in summary.unreadable)
    assert summary.as_dict()["unreadable"] == 2 and summary.images_per_second > 0
    assert read_id_map_png(tmp_path / "out" / "frame_0000_ids.png").shape == (48, 64)
    # unreadable files are not marked done: a rerun tries them again
    again = run_on_files(
        _predictor(), files, tmp_path / "out", [_ids_output()], num_workers=0, progress=False
    )
    assert again.already_done == 3 and again.processed == 0 and len(again.unreadable) == 2


def test_crash_and_resume_write_every_output_once_identical_to_one_run(tmp_path):
    _make_images(tmp_path / "in", 16)
    files = list_images(tmp_path / "in")
    outputs = [_json_output()]
    reference = tmp_path / "ref"
    run_on_files(
        _predictor(), files, reference, [_ids_output(), *outputs], num_workers=0, progress=False
    )

    out = tmp_path / "out"
    first: list[str] = []
    with pytest.raises(Interrupted, match="7 of 16 images are complete"):  # Ctrl-C at the 8th
        run_on_files(
            _predictor(),
            files,
            out,
            [_ids_output(first, fail_after=7), *outputs],
            num_workers=0,
            progress=False,
        )
    assert len(first) == 7
    assert len(completed_stems(out)) == 7  # the 8th image is not complete ...
    assert not list(out.glob(".tmp-*"))  # ... and its partial file was removed
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_ids.png")}

    second: list[str] = []
    summary = run_on_files(
        _predictor(), files, out, [_ids_output(second), *outputs], num_workers=0, progress=False
    )
    assert summary.already_done == 7 and summary.processed == 9
    assert sorted(first + second) == sorted(output_stems(files))  # each image written once
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_ids.png") if p.name in stamps} == (
        stamps
    )
    assert _outputs(out) == _outputs(reference)


def test_output_missing_after_completion_is_redone(tmp_path):
    _make_images(tmp_path / "in", 3)
    files = list_images(tmp_path / "in")
    out = tmp_path / "out"
    run_on_files(_predictor(), files, out, [_ids_output()], num_workers=0, progress=False)
    (out / "frame_0001_ids.png").unlink()
    log: list[str] = []
    summary = run_on_files(_predictor(), files, out, [_ids_output(log)], num_workers=0)
    assert log == ["frame_0001"] and summary.already_done == 2


def test_a_cut_off_completion_line_does_not_count(tmp_path):
    (tmp_path / DONE_DIR).mkdir()
    (tmp_path / DONE_DIR / "all.txt").write_text("a\nb\nfram")
    assert completed_stems(tmp_path) == {"a", "b"}


def test_shards_together_equal_one_run_with_workers(tmp_path):
    _make_images(tmp_path / "in", 8)
    files = list_images(tmp_path / "in")
    outputs = [_ids_output(), _json_output()]
    run_on_files(_predictor(), files, tmp_path / "one", outputs, num_workers=0, progress=False)
    sharded = tmp_path / "sharded"
    counts = []
    for i in range(2):
        s = run_on_files(
            _predictor(),
            files,
            sharded,
            outputs,
            shard=(i, 2),
            num_workers=1,
            images_per_batch=2,
            progress=False,
        )
        counts.append(s.processed)
    assert counts == [4, 4]
    assert _outputs(sharded) == _outputs(tmp_path / "one")
    assert completed_stems(sharded) == set(output_stems(files))


PRODUCER = {
    "checkpoint": {"name": "last.ckpt", "step": 200, "sha256": "a" * 64},
    "test": {"short_side": 800, "num_crops": 4},
    "fusion": {"decoder": "B-OC"},
    "precision": "32",
}


def _run(files, out, producer, log=None, **kwargs):
    return run_on_files(
        _predictor(),
        files,
        out,
        [_ids_output(log)],
        num_workers=0,
        progress=False,
        producer=producer,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"checkpoint": {"name": "last.ckpt", "step": 4, "sha256": "b" * 64}}, "checkpoint"),
        ({"fusion": {"decoder": "I-O"}}, "fusion.decoder: B-OC -> I-O"),
        ({"test": {"short_side": 800, "num_crops": 0}}, "test.num_crops: 4 -> 0"),
        ({"precision": "bf16"}, "precision: 32 -> bf16"),
    ],
)
def test_resume_refuses_outputs_of_another_checkpoint_or_settings(tmp_path, change, named):
    _make_images(tmp_path / "in", 3)
    files = list_images(tmp_path / "in")
    out = tmp_path / "out"
    _run(files, out, PRODUCER)
    before = {p.name: p.read_bytes() for p in out.glob("*_ids.png")}
    log: list[str] = []
    with pytest.raises(UserError) as err:
        _run(files, out, {**PRODUCER, **change}, log)
    line = str(err.value)
    assert "\n" not in line and named in line
    assert "output=<a new folder>" in line and "resume=false" in line
    assert not log  # nothing computed, nothing overwritten
    assert {p.name: p.read_bytes() for p in out.glob("*_ids.png")} == before


def test_resume_false_recomputes_under_the_new_record_only(tmp_path):
    _make_images(tmp_path / "in", 3)
    files = list_images(tmp_path / "in")
    out = tmp_path / "out"
    _run(files, out, PRODUCER)
    other = {**PRODUCER, "fusion": {"decoder": "I-O"}}
    log: list[str] = []
    summary = _run(files, out, other, log, resume=False)
    assert summary.processed == 3 and len(log) == 3
    records = [json.loads(p.read_text()) for p in (out / DONE_DIR).glob(f"*/{PRODUCER_FILE}")]
    assert records == [other]  # the old record is gone: nothing can mix
    again: list[str] = []
    assert _run(files, out, other, again).already_done == 3 and not again


def test_same_record_resumes_and_shards_agree(tmp_path):
    _make_images(tmp_path / "in", 4)
    files = list_images(tmp_path / "in")
    out = tmp_path / "out"
    assert _run(files, out, PRODUCER, shard=(0, 2)).processed == 2
    assert _run(files, out, dict(PRODUCER), shard=(1, 2)).processed == 2
    assert len(list((out / DONE_DIR).iterdir())) == 1  # one record for both shards
    assert _run(files, out, PRODUCER).already_done == 4


def test_a_folder_of_an_earlier_version_is_not_resumed_blindly(tmp_path):
    _make_images(tmp_path / "in", 2)
    files = list_images(tmp_path / "in")
    out = tmp_path / "out"
    (out / DONE_DIR).mkdir(parents=True)
    (out / DONE_DIR / "all.txt").write_text("frame_0000\n")
    with pytest.raises(UserError, match="did not record"):
        _run(files, out, PRODUCER)


def _scan_tree(root, scenes=("scene2", "scene10"), frames=(0, 1, 2, 10, 11, 20)) -> None:
    """A ScanNet-style tree ``<root>/<scene>/color/<frame>.jpg`` (unpadded frame numbers)."""
    rng = np.random.default_rng(3)
    for scene in scenes:
        (root / scene / "color").mkdir(parents=True)
        (root / scene / "depth").mkdir()
        for f in frames:
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / scene / "color" / f"{f}.jpg", quality=95)


def test_frames_sort_numerically_and_every_takes_every_nth_per_folder(tmp_path):
    _scan_tree(tmp_path / "scans")
    files = list_images(tmp_path / "scans")
    rel = [p.relative_to(tmp_path / "scans").as_posix() for p in files]
    assert rel[:6] == [f"scene2/color/{f}.jpg" for f in (0, 1, 2, 10, 11, 20)]
    assert rel[6] == "scene10/color/0.jpg"  # scene2 before scene10
    assert [p.name for p in list_images([files[3], files[1]])] == ["1.jpg", "10.jpg"]
    picked = every_nth(files, 2)
    assert [p.relative_to(tmp_path / "scans").as_posix() for p in picked] == [
        f"{s}/color/{f}.jpg" for s in ("scene2", "scene10") for f in (0, 2, 11)
    ]  # each scene starts at its first frame
    assert every_nth(files, 1) == files
    for bad in (0, -2, 1.5, True):
        with pytest.raises(UserError, match="every="):
            every_nth(files, bad)


def test_mirror_names_and_input_roots(tmp_path):
    _scan_tree(tmp_path / "scans")
    files = list_images(str(tmp_path / "scans" / "*" / "color" / "*.jpg"))
    assert input_root(str(tmp_path / "scans" / "*" / "color" / "*.jpg")) == tmp_path / "scans"
    assert input_root(tmp_path / "scans") == tmp_path / "scans"
    assert input_root(files[0]) == files[0].parent
    two = [tmp_path / "scans" / "scene2", tmp_path / "scans" / "scene10"]
    assert input_root(two) == tmp_path / "scans"
    names = mirror_names(files, tmp_path / "scans")
    assert names[0] == "scene2/color/0" and names[-1] == "scene10/color/20"
    twins = [tmp_path / "a" / "1.jpg", tmp_path / "a" / "1.png", tmp_path / "a" / "2.jpg"]
    assert mirror_names(twins, tmp_path) == ["a/1.jpg", "a/1.png", "a/2"]
    with pytest.raises(UserError, match="not inside the input folder"):
        mirror_names(files, tmp_path / "elsewhere")


def test_shards_by_scene_keep_scenes_whole_and_cover_all(tmp_path):
    _scan_tree(tmp_path / "scans", scenes=("s1", "s2", "s3"))
    files = list_images(tmp_path / "scans")
    parts = [shard_indices(files, (i, 2), "scene") for i in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(len(files)))
    scenes = [{files[k].parent.parent.name for k in part} for part in parts]
    assert scenes == [{"s1", "s3"}, {"s2"}]
    assert shard_indices(files, (1, 3), "frame") == select_shard(len(files), (1, 3))
    with pytest.raises(UserError, match="shard_by="):
        shard_indices(files, (0, 2), "folder")


def _tree_outputs(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and DONE_DIR not in p.parts
    }


def test_mirror_layout_resumes_after_a_crash_and_shards_by_scene(tmp_path):
    _scan_tree(tmp_path / "scans")
    files = list_images(tmp_path / "scans")
    names = mirror_names(files, tmp_path / "scans")
    outputs = [_json_output()]
    ref = tmp_path / "ref"
    run_on_files(
        _predictor(),
        files,
        ref,
        [_ids_output(), *outputs],
        stems=names,
        progress=False,
        num_workers=0,
    )
    assert sorted(_tree_outputs(ref))[:2] == ["scene10/color/0.json", "scene10/color/0_ids.png"]
    out = tmp_path / "out"
    first: list[str] = []
    with pytest.raises(Interrupted):
        run_on_files(
            _predictor(),
            files,
            out,
            [_ids_output(first, fail_after=8), *outputs],
            stems=names,
            num_workers=0,
            progress=False,
        )
    assert len(completed_stems(out)) == 8 and "scene10/color/1" in completed_stems(out)
    second: list[str] = []
    summary = run_on_files(
        _predictor(),
        files,
        out,
        [_ids_output(second), *outputs],
        stems=names,
        num_workers=0,
        progress=False,
    )
    assert summary.already_done == 8 and sorted(first + second) == sorted(names)
    assert _tree_outputs(out) == _tree_outputs(ref)
    sharded = tmp_path / "sharded"
    for i in range(2):
        s = run_on_files(
            _predictor(),
            files,
            sharded,
            [_ids_output(), *outputs],
            stems=names,
            shard=(i, 2),
            shard_by="scene",
            num_workers=0,
            progress=False,
        )
        assert s.processed == 6
    assert _tree_outputs(sharded) == _tree_outputs(ref)
