"""The shared test-time settings (``conf/inference``): one name each in train, eval and predict.

``inference.short_side``, ``.max_size``, ``.num_crops``, ``.crop_ratio`` and ``.fusion.*`` are
null unless given; a given value replaces the run's own (the data config's views, the model's
or the checkpoint's fusion), the same way in the three commands.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from cropformer.utils.errors import UserError

#: the view settings and the data-config key each one sets (train.py, eval.py)
VIEW_KEYS: dict[str, str] = {
    "short_side": "data.test_short_side",
    "max_size": "data.test_max_size",
    "num_crops": "data.crop.num_test",
    "crop_ratio": "data.crop.ratio",
}


def _node(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = OmegaConf.select(cfg, key)
    if node is None:
        return {}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(plain, dict):
        raise UserError(f"{key}={plain!r}: must be a mapping (see conf/inference/default.yaml)")
    return {str(k): v for k, v in plain.items()}


def view_settings(cfg: DictConfig) -> dict[str, Any]:
    """``{short_side, max_size, num_crops, crop_ratio}`` as given (None = the run's own)."""
    node = _node(cfg, "inference")
    return {key: node.get(key) for key in VIEW_KEYS}


def fusion_settings(cfg: DictConfig) -> dict[str, Any]:
    """The given ``inference.fusion.*`` values (nulls dropped: they keep the run's own)."""
    return {k: v for k, v in _node(cfg, "inference.fusion").items() if v is not None}


def apply_to_data(cfg: DictConfig, *, training: bool) -> None:
    """Given view settings replace the data config's test views (in place).

    In train.py the crop ratio is one setting for the training and the validation crops: it is
    ``data.crop.ratio`` there, and ``inference.crop_ratio`` is an error rather than a silent
    change of the training crops.
    """
    for key, value in view_settings(cfg).items():
        if value is None:
            continue
        if training and key == "crop_ratio":
            raise UserError(
                f"inference.crop_ratio={value}: in train.py the crop ratio of the training and "
                f"validation crops is one setting; pass data.crop.ratio={value} instead"
            )
        OmegaConf.update(cfg, VIEW_KEYS[key], value, merge=False)


def apply_to_model(cfg: DictConfig) -> None:
    """Given fusion settings replace the model's (train.py: what validation uses and the
    checkpoint stores)."""
    for key, value in fusion_settings(cfg).items():
        OmegaConf.update(cfg, f"model.fusion.{key}", value, merge=False)
