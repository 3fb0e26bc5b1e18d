"""The test-time view settings a checkpoint carries, and how overrides merge into them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cropformer.data.views import OFFICIAL_TEST_VIEWS
from cropformer.utils.errors import UserError

#: the official test-time views as ``EntityPredictor`` keywords (``OFFICIAL_TEST_VIEWS``' fields)
OFFICIAL_TEST_SETTINGS: dict[str, Any] = dataclasses.asdict(OFFICIAL_TEST_VIEWS)


def views_from_data_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """Test-time views stored with one of our checkpoints (what eval.py's data module uses)."""
    crop = dict(data.get("crop") or {})
    out = dict(OFFICIAL_TEST_SETTINGS)
    pairs = {
        "short_side": data.get("test_short_side"),
        "max_size": data.get("test_max_size"),
        "num_crops": crop.get("num_test"),
        "crop_ratio": crop.get("ratio"),
        "stride_ratio": crop.get("stride_ratio"),
        "crop_mode": crop.get("mode"),
        # the data module caps crop views by crop_max_size, else train_max_size
        "crop_max_size": data.get("crop_max_size") or data.get("train_max_size"),
        "cover_gap": crop.get("cover_gap"),
    }
    out.update({k: v for k, v in pairs.items() if v is not None})
    return out


def views_from_official_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    inp = cfg.get("INPUT") or {}
    entity = cfg.get("ENTITY") or {}
    pairs = {
        "short_side": inp.get("MIN_SIZE_TEST"),
        "max_size": inp.get("MAX_SIZE_TEST"),
        "crop_max_size": inp.get("MAX_SIZE_TRAIN"),
        "num_crops": entity.get("CROP_SAMPLE_NUM_TEST"),
        "crop_ratio": entity.get("CROP_AREA_RATIO"),
        "stride_ratio": entity.get("CROP_STRIDE_RATIO"),
    }
    if cfg.get("MODEL", {}).get("META_ARCHITECTURE") != "CropFormer":
        pairs["num_crops"] = 0  # Mask2Former: the full view only
    return {k: v for k, v in pairs.items() if v is not None}


def test_settings(stored: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Test-time view settings: explicit overrides (non-None) > stored with the checkpoint.

    Returns the keyword arguments of ``EntityPredictor`` for the views (``short_side``,
    ``max_size``, ``num_crops``, ``crop_ratio``, ``stride_ratio``, ``crop_mode``,
    ``crop_max_size``).
    """
    unknown = set(overrides) - set(OFFICIAL_TEST_SETTINGS)
    if unknown:
        raise UserError(
            f"unknown test setting(s) {sorted(unknown)}; known: {sorted(OFFICIAL_TEST_SETTINGS)}"
        )
    out = {**OFFICIAL_TEST_SETTINGS, **stored}
    out.update({k: v for k, v in overrides.items() if v is not None})
    out["short_side"], out["max_size"] = int(out["short_side"]), int(out["max_size"])
    out["num_crops"] = int(out["num_crops"])
    out["crop_ratio"], out["stride_ratio"] = float(out["crop_ratio"]), float(out["stride_ratio"])
    if out["num_crops"] == 0 or out["crop_mode"] == "none":
        out["crop_mode"], out["num_crops"] = "none", 0
    if out["crop_max_size"] is not None:
        out["crop_max_size"] = int(out["crop_max_size"])
    return out
