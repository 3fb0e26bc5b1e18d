"""Every conf/data config composes and instantiates; the default one yields a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cropformer.data.datamodule import EntityDataModule

CONF = Path(__file__).resolve().parents[2] / "conf"
DATA_CONFIGS = sorted(p.stem for p in (CONF / "data").glob("[!_]*.yaml"))
KEYS = ("image_root", "train_annotations", "val_annotations", "test_annotations")


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_config_instantiates(name, tmp_path):
    cfg = _compose([f"data={name}", f"paths.root_dir={tmp_path}"])
    for key in KEYS:
        assert key in cfg.data, f"conf/data/{name}.yaml lacks {key}"
    dm = instantiate(cfg.data, _recursive_=False)
    assert isinstance(dm, EntityDataModule)
    assert dm.crop["ratio"] == 0.7 and dm.crop["num_test"] == 4


@pytest.mark.parametrize(
    ("crop", "views"), [("fixed4", 5), ("fixed8", 9), ("random", 5), ("none", 1)]
)
def test_synthetic_default_one_batch(crop, views, tmp_path):
    cfg = _compose(
        [
            "data=synthetic",
            f"data/crop={crop}",
            f"paths.root_dir={tmp_path}",
            "data.synthetic.num_train=2",
            "data.synthetic.num_val=1",
            "data.synthetic.num_test=1",
            "data.synthetic.image_size=[256,192]",
        ]
    )
    dm = instantiate(cfg.data, _recursive_=False)
    dm.prepare_data()
    assert Path(dm.val_annotation_file).is_file()
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["boxes"].shape[1] == (1 if crop == "none" else 2)
    val = next(iter(dm.val_dataloader()))
    assert val["boxes"].shape[1] == views
    assert "targets" in train and "targets" not in val  # eval_targets: false (AP reads the json)
    assert max(val["view_sizes"][0].tolist()) <= cfg.data.test_max_size
