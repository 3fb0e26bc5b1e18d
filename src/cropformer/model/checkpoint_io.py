"""Read weight files of any origin and recognise official detectron2 checkpoints by their keys.

Three kinds of file reach the loaders (``predict.py``/``eval.py`` ``ckpt=``, ``load_segmenter``,
``model.init_checkpoint``):

- ``lightning``: a checkpoint of this platform (``state_dict`` + ``hyper_parameters``);
- ``converted``: the output of ``scripts/convert_official_checkpoint.py`` (our keys, ``model``
  names the config);
- ``official``: a detectron2 ``.pth`` (``{"model": state_dict, "iteration": ...}`` or a bare
  state dict) or ``.pkl`` (pickle of ``{"model": {name: numpy array}}``), as published.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def read_weights_file(path: str | Path) -> Any:
    """Load a ``.ckpt``/``.pth``/``.pt``/``.pkl`` file on the CPU.

    Tensors-only files load with ``weights_only=True``; files that pickle other objects (Lightning
    checkpoints, some detectron2 files) fall back to a full unpickle: load trusted files only.
    """
    path = Path(path)
    if path.suffix == ".pkl":  # detectron2 model-zoo pickles (numpy arrays)
        with path.open("rb") as f:
            return pickle.load(f, encoding="latin1")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False)


def official_weights(obj: Any) -> Mapping[str, Any] | None:
    """The official (detectron2-named) state dict inside a loaded file, or None if it is not one.

    Recognised by the key names: a ``backbone.*`` and a ``sem_seg_head.*`` entry (the Mask2Former
    meta-architecture), at the top level or under ``model``.
    """
    if not isinstance(obj, Mapping):
        return None
    model = obj.get("model")
    inner: Mapping[str, Any] = model if isinstance(model, Mapping) else obj
    try:  # the converter's own test, when it has one
        from cropformer.model.convert import is_official_state_dict  # type: ignore[attr-defined]

        return inner if is_official_state_dict(inner) else None
    except ImportError:
        pass
    keys = [k for k in inner if isinstance(k, str)]
    has_backbone = any(k.startswith("backbone.") for k in keys)
    has_head = any(k.startswith("sem_seg_head.") for k in keys)
    return inner if has_backbone and has_head else None


def checkpoint_kind(obj: Any) -> str:
    """``lightning``, ``converted``, ``official`` or ``unknown`` (see the module docstring)."""
    if isinstance(obj, Mapping):
        if "state_dict" in obj and "hyper_parameters" in obj:
            return "lightning"
        if "state_dict" in obj and isinstance(obj.get("model"), str):
            return "converted"
    if official_weights(obj) is not None:
        return "official"
    return "unknown"


def guess_official_model(state_dict: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Our ``model=`` config name (and overrides) for an official state dict, from its keys.

    CropFormer if the association module (``make_3d``) is present, else Mask2Former; the backbone
    from its stem (R50 / Swin-T / Swin-L w7 / HorNet-L); the query count from ``query_feat``.

    Raises:
        ValueError: the backbone is none of the released ones (names what was found).
    """
    try:  # the converter's detector, when it has one (it knows HorNet)
        from cropformer.model.convert import (  # type: ignore[attr-defined]
            detect_official_architecture,
        )

        found = detect_official_architecture(state_dict)
        if isinstance(found, str):
            return found, _query_override(state_dict, found)
        name, overrides = found
        return str(name), list(overrides)
    except ImportError:
        pass
    kind = "cropformer" if any(".make_3d." in k for k in state_dict) else "mask2former"
    if "backbone.stem.conv1.weight" in state_dict:
        backbone = "r50"
    elif "backbone.patch_embed.proj.weight" in state_dict:
        width = int(state_dict["backbone.patch_embed.proj.weight"].shape[0])
        backbone = {96: "swint", 192: "swinl"}.get(width, "")
        if not backbone:
            raise ValueError(f"Swin embed width {width} is neither Swin-T (96) nor Swin-L (192)")
    elif any(k.startswith("backbone.") and ".gnconv." in k for k in state_dict):
        backbone = "hornetl"
    else:
        raise ValueError("the backbone is none of R50 / Swin-T / Swin-L / HorNet-L")
    name = f"{kind}_{backbone}"
    return name, _query_override(state_dict, name)


def _query_override(state_dict: Mapping[str, Any], name: str) -> list[str]:
    query = state_dict.get("sem_seg_head.predictor.query_feat.weight")
    if query is None:
        return []
    return [f"model.net.decoder.num_queries={int(query.shape[0])}"]


def strip_compile_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter names without ``torch.compile``'s ``_orig_mod.`` (written by other tools)."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def network_state(stored: Any) -> tuple[dict[str, Any], list[str]]:
    """The network's weights under our names, from a loaded file of any kind.

    One reading of every format (used for ``ckpt=``, ``load_segmenter`` and
    ``model.init_checkpoint`` alike): an official detectron2 file is converted in memory; a
    checkpoint of this platform gives its ``net.*`` entries without the prefix; a converted file
    or a bare state dict is taken as it is. ``torch.compile`` prefixes are dropped.

    Returns:
        (state dict of the network, official keys that map to nothing: always empty for files
        that are not official).
    """
    official = official_weights(stored)
    if official is not None and checkpoint_kind(stored) == "official":
        from cropformer.model.convert import convert_official_state_dict

        state, unmapped = convert_official_state_dict(official)
        return dict(state), list(unmapped)
    state = stored.get("state_dict", stored) if isinstance(stored, Mapping) else stored
    if not isinstance(state, Mapping):
        raise ValueError(f"expected a state dict, found {type(state).__name__}")
    if any(isinstance(k, str) and k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return strip_compile_prefix(state), []


def read_checkpoint_header(path: str | Path) -> Any:
    """A file's content without reading its tensors into memory (memory-mapped where possible).

    For a look at its kind, step or stored configs; use ``read_weights_file`` for the weights.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        return read_weights_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # an old (non-zip) serialisation cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=False)
