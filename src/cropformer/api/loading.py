"""Load any checkpoint file (ours, converted, official detectron2) into a ``CropFormerModule``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropformer.api.settings import (
    OFFICIAL_TEST_SETTINGS,
    views_from_data_config,
    views_from_official_config,
)
from cropformer.utils.errors import UserError


@dataclass(frozen=True)
class CheckpointInfo:
    """Where the weights came from: file, kind (``lightning``/``converted``/``official``), the
    model config they were built with, the training step, and the stored test-time views."""

    path: Path
    kind: str
    model: str
    step: int | None
    stored_views: Mapping[str, Any]

    def describe(self) -> str:
        step = "?" if self.step is None else str(self.step)
        return f"{self.path} ({self.kind}, {self.model}, step {step})"


def load_module(
    checkpoint: str | Path,
    *,
    fusion: Mapping[str, Any] | None = None,
    model: str | Mapping[str, Any] | None = None,
    model_overrides: Sequence[str] = (),
    official_config: str | Path | None = None,
) -> tuple[Any, CheckpointInfo]:
    """Rebuild a ``CropFormerModule`` from any checkpoint file, fusion settings overridden.

    Args:
        checkpoint: ours (``.ckpt``), a converted file (``scripts/convert_official_checkpoint``),
            or an official detectron2 ``.pth``/``.pkl`` (converted in memory).
        fusion: fusion keys to override (None values keep the stored/official ones).
        model, model_overrides: our model config for an official/converted file: a ``model=``
            name (e.g. ``cropformer_swinl``) with overrides, or an already composed ``model`` node
            (``predict.py model=...``); default: guessed from the keys.
        official_config: the official (resolved) yaml config of an official file: builds the
            network with its exact sizes and takes its test sizes.

    Returns:
        (module in eval mode on the CPU, ``CheckpointInfo``).

    Raises:
        UserError: unreadable file, unknown format, or weights that do not fit (one line each).
    """
    from cropformer.model.checkpoint_io import checkpoint_kind, read_weights_file

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt={checkpoint}: file not found")
    try:
        stored = read_weights_file(path)
    except Exception as err:  # any unpickling failure: not a weights file
        raise UserError(f"ckpt={path}: cannot read it as a checkpoint ({err})") from err
    kind = checkpoint_kind(stored)
    overrides = {k: v for k, v in (fusion or {}).items() if v is not None}
    if kind == "lightning":
        from cropformer.training.module import CropFormerModule

        if model is not None or official_config is not None:
            raise UserError(
                f"ckpt={path} is a checkpoint of this platform: it rebuilds its own network; "
                "drop model=/official_config= (they are for official detectron2 files)"
            )

        merged = {**(stored["hyper_parameters"].get("fusion") or {}), **overrides}
        module = CropFormerModule.load_from_checkpoint(path, map_location="cpu", fusion=merged)
        data_cfg = stored.get("data_config") or {}
        info = CheckpointInfo(
            path=path,
            kind=kind,
            model=_model_name(stored["hyper_parameters"].get("net") or {}),
            step=_int_or_none(stored.get("global_step")),
            stored_views=views_from_data_config(data_cfg),
        )
        return module.eval(), info
    if kind in ("official", "converted"):
        return _load_foreign(path, stored, kind, overrides, model, model_overrides, official_config)
    raise UserError(
        f"ckpt={path}: neither a checkpoint of this platform (state_dict + hyper_parameters) nor "
        "an official detectron2 CropFormer/Mask2Former file (backbone.* and sem_seg_head.* keys)"
    )


def _load_foreign(
    path: Path,
    stored: Any,
    kind: str,
    fusion: Mapping[str, Any],
    model: str | Mapping[str, Any] | None,
    model_overrides: Sequence[str],
    official_config: str | Path | None,
) -> tuple[Any, CheckpointInfo]:
    """An official (or converted) file: build the network from a config, load strictly."""
    from cropformer.model.checkpoint_io import guess_official_model, official_weights
    from cropformer.model.convert import convert_official_state_dict
    from cropformer.run.config import compose_config
    from cropformer.training.module import CropFormerModule

    if kind == "official":
        weights, unmapped = convert_official_state_dict(official_weights(stored) or {})
        if unmapped:
            raise UserError(
                f"ckpt={path}: {len(unmapped)} official keys map to nothing in this package "
                f"(first: {unmapped[0]}); is it a CropFormer/Mask2Former checkpoint?"
            )
        step = _int_or_none(stored.get("iteration")) if isinstance(stored, Mapping) else None
    else:
        weights = {k.removeprefix("net."): v for k, v in stored["state_dict"].items()}
        step = None
        model = model if model is not None else str(stored["model"])
    views = dict(OFFICIAL_TEST_SETTINGS)
    if official_config is not None:
        import yaml

        cfg_path = Path(official_config).expanduser()
        if not cfg_path.is_file():
            raise UserError(f"official_config={official_config}: file not found")
        official_cfg = yaml.safe_load(cfg_path.read_text())
        net_cfg: dict[str, Any] = {
            "_target_": "cropformer.model.convert.build_from_official_config",
            "_convert_": "all",
            "_recursive_": False,
            "cfg": official_cfg,
        }
        views.update(views_from_official_config(official_cfg))
        name = f"official config {cfg_path.name}"
        base = compose_config(["model=cropformer_tiny"]).model  # criterion/fusion defaults only
    elif isinstance(model, Mapping):  # composed by Hydra (predict.py / eval.py model=...)
        base = model
        net_cfg = base["net"]
        name = _model_name(_plain(net_cfg))
    else:
        if model is None:
            try:
                model, guessed = guess_official_model(official_weights(stored) or {})
            except (ValueError, UserError) as err:
                raise UserError(
                    f"ckpt={path}: cannot tell the architecture from the keys ({err}); pass "
                    "model=<our config, e.g. cropformer_swinl> or official_config=<its yaml>"
                ) from err
            model_overrides = [*guessed, *model_overrides]
        try:
            base = compose_config([f"model={model}", *model_overrides]).model
        except Exception as err:  # unknown model name or override
            raise UserError(f"model={model} {' '.join(model_overrides)}: {err}") from err
        net_cfg = base.net
        name = model
    fusion_cfg = {**_plain(base["fusion"]), **fusion}
    module = CropFormerModule(net=net_cfg, criterion=base["criterion"], fusion=fusion_cfg)
    result = module.net.load_state_dict(weights, strict=False)
    problems = list(result.missing_keys) + list(result.unexpected_keys)
    if problems:
        raise UserError(
            f"ckpt={path}: the weights do not fit {name}: {len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected (first: {problems[0]}); pass the right "
            "model=... or official_config=<the official yaml>"
        )
    info = CheckpointInfo(path=path, kind=kind, model=name, step=step, stored_views=views)
    return module.eval(), info


def _plain(node: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    return dict(node)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _model_name(net_cfg: Mapping[str, Any]) -> str:
    kind = "cropformer" if net_cfg.get("association") else "mask2former"
    backbone = (net_cfg.get("backbone") or {}).get("model_name") or "?"
    return f"{kind} ({backbone})"


def describe_settings(
    info: CheckpointInfo, views: Mapping[str, Any], fusion: Any, precision: str
) -> str:
    """One short line: views, crops, fusion, precision, checkpoint and step."""
    decoder = getattr(fusion, "decoder", None) or (fusion or {}).get("decoder", "?")
    quirks = "official" if getattr(fusion, "double_sigmoid", True) else "fixed"
    crops = (
        f"{views['num_crops']} crops x {views['crop_ratio']:g}"
        if views["num_crops"]
        else "no crops"
    )
    return (
        f"test views {views['short_side']}/{views['max_size']}, {crops}, fusion {decoder} "
        f"({quirks} scores), precision {precision}; checkpoint {info.describe()}"
    )
