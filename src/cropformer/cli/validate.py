"""Configuration checks before any work: unknown keys and bad values, one line each.

Two entry points:

- :func:`check_command_line` runs in the ``train.py``/``eval.py``/``predict.py`` shims *before*
  Hydra starts, so a misspelt key (with or without ``+``) or a bad value stops the command with
  one ``error:`` line, exit code 2, no run folder and no data read.
- :func:`check_values` runs again at the start of each task (tests and Python callers compose
  configs themselves; sweep jobs get their values only inside the job).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from cropformer.run.config_keys import KeyIndex, find_unknown, index_keys, merge_indexes
from cropformer.utils.errors import UserError
from cropformer.utils.precision import PRECISIONS, USER_PRECISIONS

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


_ABSENT = object()


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """``cfg[key]`` resolved; ``default`` when absent or not resolvable here (``${hydra:...}``)."""
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
    except Exception:
        return default


def _absent(cfg: DictConfig, key: str) -> bool:
    return _select(cfg, key, _ABSENT) is _ABSENT


def _fail(key: str, value: Any, allowed: str) -> UserError:
    return UserError(f"{key}={value!r}: {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _check_int(cfg: DictConfig, key: str, low: int, what: str, optional: bool = False) -> None:
    if _absent(cfg, key):
        return
    value = _select(cfg, key)
    if value is None and optional:
        return
    if value is None or not _is_int(value) or value < low:
        raise _fail(key, value, f"must be an integer >= {low} ({what})")


def _check_fraction(
    cfg: DictConfig, key: str, low: float, high: float, what: str, open_low: bool = True
) -> None:
    if _absent(cfg, key):
        return
    value = _select(cfg, key)
    number = _number(value)
    below = number is not None and (number <= low if open_low else number < low)
    if number is None or math.isnan(number) or below or number > high:
        bracket = "(" if open_low else "["
        raise _fail(key, value, f"must be a number in {bracket}{low}, {high}] ({what})")


def _check_number(cfg: DictConfig, key: str, low: float, what: str, open_low: bool) -> None:
    """A finite number above ``low`` (or at least ``low`` when ``open_low`` is false)."""
    if _absent(cfg, key):
        return
    value = _select(cfg, key)
    number = _number(value)
    if number is None or not math.isfinite(number) or (number <= low if open_low else number < low):
        raise _fail(key, value, f"must be a number {'>' if open_low else '>='} {low:g} ({what})")


def _check_optimizer(cfg: DictConfig) -> None:
    """The optimizer's numbers (a string here fails deep inside torch otherwise)."""
    _check_number(cfg, "model.optimizer.lr", 0.0, "learning rate, e.g. 1e-4", open_low=True)
    _check_number(cfg, "model.optimizer.weight_decay", 0.0, "e.g. 0.05", open_low=False)
    _check_number(
        cfg, "model.optimizer.backbone_lr_mult", 0.0, "backbone lr / lr, e.g. 0.1", open_low=False
    )


def _check_choice(cfg: DictConfig, key: str, choices: Sequence[Any], what: str) -> None:
    if _absent(cfg, key):
        return
    value = _select(cfg, key)
    if value is None and None in choices:
        return
    if value not in choices:
        shown = ", ".join(dict.fromkeys(str(c) for c in choices if c is not None))
        raise _fail(key, value, f"{what}; use one of {shown}")


def _check_bool(cfg: DictConfig, key: str, extra: Sequence[str] = ()) -> None:
    if _absent(cfg, key):
        return
    value = _select(cfg, key)
    if not isinstance(value, bool) and value not in extra:
        allowed = " or ".join(["true", "false", *extra])
        raise _fail(key, value, f"must be {allowed}")


def _check_data(cfg: DictConfig) -> None:
    from cropformer.data.views import CROP_MODES

    if not isinstance(cfg.get("data"), DictConfig):
        return
    _check_choice(cfg, "data.crop.mode", CROP_MODES, "not a crop mode (data/crop=<option>)")
    _check_fraction(cfg, "data.crop.ratio", 0.0, 1.0, "crop side / image side, e.g. 0.7")
    _check_fraction(
        cfg, "data.crop.stride_ratio", 0.0, 1.0, "corner placement, official 0.6", open_low=False
    )
    _check_int(cfg, "data.crop.num_train", 0, "crop views per training image")
    _check_int(cfg, "data.crop.num_test", 0, "crop views per evaluation image")
    _check_int(cfg, "data.batch_size", 1, "global images per step")
    _check_int(cfg, "data.eval_batch_size", 1, "images per device at evaluation")
    sides = _select(cfg, "data.train_short_sides")
    if sides is not None:
        values = list(sides) if not _is_int(sides) else [sides]
        if not values or not all(_is_int(v) and v > 0 for v in values):
            raise _fail(
                "data.train_short_sides", sides, "must be a list of positive integers, e.g. [800]"
            )
    for key in ("data.train_max_size", "data.test_short_side", "data.test_max_size"):
        _check_int(cfg, key, 1, "pixels")
    _check_int(cfg, "data.crop_max_size", 1, "pixels; null = data.train_max_size", optional=True)
    _check_int(cfg, "data.size_divisibility", 0, "pad views to a multiple of it")
    _check_fraction(cfg, "data.flip_prob", 0.0, 1.0, "probability", open_low=False)
    workers = _select(cfg, "data.num_workers")
    if workers is not None and workers != "auto" and not (_is_int(workers) and workers >= 0):
        raise _fail("data.num_workers", workers, "must be auto (follows the CPU count) or >= 0")
    _check_bool(cfg, "data.pin_memory", extra=("auto",))
    for key in ("persistent_workers", "filter_empty", "skip_bad_samples", "eval_targets"):
        _check_bool(cfg, f"data.{key}")


def _check_trainer(cfg: DictConfig) -> None:
    if not isinstance(cfg.get("trainer"), DictConfig):
        return
    if cfg.get("train", False):
        steps = _select(cfg, "trainer.max_steps")
        if not _is_int(steps) or steps <= 0:
            raise _fail(
                "trainer.max_steps", steps, "training is iteration-based, set trainer.max_steps > 0"
            )
    _check_choice(cfg, "trainer.precision", tuple(PRECISIONS), "not a Lightning precision")
    interval = _select(cfg, "trainer.val_check_interval")
    if interval is not None:
        number = _number(interval)
        steps_ok = _is_int(interval) and interval > 0
        ok = number is not None and (steps_ok or (isinstance(interval, float) and 0 < number <= 1))
        if not ok:
            raise _fail(
                "trainer.val_check_interval",
                interval,
                "must be a number of steps > 0 or a fraction of an epoch in (0, 1]",
            )
    accelerator = _select(cfg, "trainer.accelerator")
    if isinstance(accelerator, str):
        _check_choice(cfg, "trainer.accelerator", ACCELERATORS, "not a Lightning accelerator")
        _check_devices(cfg, accelerator)


def _check_devices(cfg: DictConfig, accelerator: str) -> None:
    """``trainer=gpu``/GPU presets on a machine without (enough) GPUs: one line, not a traceback."""
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError(
            f"trainer.accelerator={accelerator} (trainer=gpu/ddp or a GPU experiment preset) but "
            "this machine has no GPU visible to torch: use trainer=cpu (or trainer.accelerator=cpu "
            "trainer.precision=32-true), or run on a GPU machine"
        )
    devices = _select(cfg, "trainer.devices")
    nodes = _select(cfg, "trainer.num_nodes")
    if _is_int(devices) and devices > count and (nodes in (None, 1)):
        raise _fail("trainer.devices", devices, f"only {count} GPU(s) are visible on this machine")


def _check_fusion(cfg: DictConfig) -> None:
    from cropformer.inference.fusion import DECODER_CHOICES, MERGE_METRICS

    choices = (None, *DECODER_CHOICES)
    _check_choice(cfg, "model.fusion.decoder", choices, "not a fusion decoder")
    own = "not a fusion decoder; null = the run's"
    _check_choice(cfg, "inference.fusion.decoder", choices, own)
    if _select(cfg, "inference.fusion.double_sigmoid") is not None:
        _check_bool(cfg, "inference.fusion.double_sigmoid")
    for key in ("short_side", "max_size"):
        _check_int(cfg, f"inference.{key}", 1, "pixels; null = the run's own", optional=True)
    _check_int(cfg, "inference.num_crops", 0, "crop views; 0 = full view only", optional=True)
    if _select(cfg, "inference.crop_ratio") is not None:
        _check_fraction(cfg, "inference.crop_ratio", 0.0, 1.0, "crop side / image side, e.g. 0.7")
    for prefix in ("model.fusion", "inference.fusion"):
        _check_choice(cfg, f"{prefix}.merge_metric", (None, *MERGE_METRICS), "not a merge metric")
        what = "overlap at which two views' entities merge"
        if _select(cfg, f"{prefix}.merge_threshold") is not None:
            _check_fraction(cfg, f"{prefix}.merge_threshold", 0.0, 1.0, what)
        _check_int(
            cfg, f"{prefix}.merge_canvas_size", 1, "long side of the merge canvas", optional=True
        )
    _check_class_fusion(cfg)


def _check_class_fusion(cfg: DictConfig) -> None:
    """The class-aware fusion's settings (``model.fusion`` of a class-aware task and the
    ``inference.fusion`` overrides), and in train.py that the given ones are its own."""
    from cropformer.inference.class_fusion import (
        CLASS_DECODERS,
        SEGMENT_PIXELS,
        check_fusion_options,
        is_class_aware,
    )

    for prefix in ("model.fusion", "inference.fusion"):
        for key, what in (
            ("object_mask_threshold", "class probability a panoptic segment needs, official 0.8"),
            ("overlap_threshold", "kept share of a panoptic segment's mask, official 0.8"),
            ("instance_score_threshold", "score of an instance in the id map, default 0.5"),
        ):
            if _select(cfg, f"{prefix}.{key}") is not None:
                _check_fraction(cfg, f"{prefix}.{key}", 0.0, 1.0, what, open_low=False)
        _check_int(cfg, f"{prefix}.top_k", 1, "instances per image, official 100", optional=True)
        _check_choice(
            cfg, f"{prefix}.segment_pixels", (None, *SEGMENT_PIXELS), "not a segment pixel rule"
        )
        if _select(cfg, f"{prefix}.overlap_strict") is not None:
            _check_bool(cfg, f"{prefix}.overlap_strict")
    model_fusion = _select(cfg, "model.fusion")
    task = _select(cfg, "task.name")
    if task is None or not isinstance(model_fusion, DictConfig) or "_target_" not in model_fusion:
        return  # eval.py / predict.py: the checkpoint's fusion (checked when it is read)
    fusion = {"_target_": model_fusion.get("_target_"), "task": task}
    given = [k for k, v in (_select(cfg, "inference.fusion") or {}).items() if v is not None]
    check_fusion_options(fusion, given)
    if is_class_aware(fusion):
        for key in ("model.fusion.decoder", "inference.fusion.decoder"):
            value = _select(cfg, key)
            if value is not None and value not in CLASS_DECODERS:
                raise _fail(
                    key,
                    value,
                    f"the view merge is entity-only; a class-aware task (task="
                    f"{fusion['task']}) uses one of {', '.join(CLASS_DECODERS)}",
                )


def _check_inference(cfg: DictConfig) -> None:
    """The eval.py / predict.py settings: precision, pixel decoder, view chunks, loader counts
    (the shared ``inference.*`` views and fusion: ``_check_fusion``)."""
    runtime = _select(cfg, "runtime")
    if runtime not in (None, "torch"):  # an exported file: fp32, bf16 (OpenVINO) or int8
        from cropformer.api.runtimes import check_runtime

        check_runtime(str(runtime), str(_select(cfg, "precision") or "fp32"))
    elif not _absent(cfg, "precision"):
        value = _select(cfg, "precision")
        evaluating = not _absent(cfg, "split")  # eval.py: null keeps trainer.precision
        if str(value) not in USER_PRECISIONS and not (evaluating and value is None):
            names = f"{', '.join(USER_PRECISIONS[:-1])} or {USER_PRECISIONS[-1]}"
            hint = " (or null to keep trainer.precision)" if evaluating else ""
            raise _fail("precision", value, f"use {names}{hint}")
    if not _absent(cfg, "pixel_decoder"):
        pixel_decoder_setting(_select(cfg, "pixel_decoder"))
    view_chunk = _select(cfg, "view_chunk")
    if view_chunk not in (None, "auto") and not (_is_int(view_chunk) and view_chunk >= 1):
        raise _fail(
            "view_chunk",
            view_chunk,
            "use auto (1 view at a time on CPU, all on GPU), null (all views at once) or a "
            "positive number of views",
        )
    for key, low in (("num_workers", 0), ("images_per_batch", 1)):
        value = _select(cfg, key)
        if value not in (None, "auto") and not (_is_int(value) and value >= low):
            raise _fail(key, value, f"use auto or an integer >= {low}")


def _check_outputs(cfg: DictConfig) -> None:
    """predict.py's output mode, layout, frame stride and sharding (``inference.output_modes``,
    ``inference.files``)."""
    from cropformer.inference.files import LAYOUTS, SHARD_BY
    from cropformer.inference.output_modes import FORMATS, ID_DTYPES

    _check_choice(cfg, "output_format", FORMATS, "not an output format")
    _check_choice(cfg, "id_dtype", tuple(ID_DTYPES), "not an id type (uint8: the demo's)")
    _check_choice(cfg, "output_layout", LAYOUTS, "flat (by file stem) or mirror (input tree)")
    _check_choice(cfg, "shard_by", SHARD_BY, "frame (every n-th image) or scene (folders)")
    if _select(cfg, "score_threshold") is not None:
        _check_fraction(
            cfg,
            "score_threshold",
            0.0,
            1.0,
            "score >= it is kept; null = the format's default",
            open_low=False,
        )
    _check_int(cfg, "min_area", 0, "pixels; entities with fewer are dropped, 0 keeps all")
    _check_int(cfg, "every", 1, "every n-th frame of each folder")
    suffix = _select(cfg, "write.id_map_suffix")
    if suffix is not None and not str(suffix).lower().endswith(".png"):
        raise _fail("write.id_map_suffix", suffix, "the id map is a PNG: end it in .png")
    rle_json = _select(cfg, "write.rle_json")
    if rle_json is not None:
        _check_bool(cfg, "write.rle_json")


def auto_or_int(value: Any) -> int | None:
    """A checked ``auto``/``null``/int setting (``view_chunk``, ``num_workers``, ...): None for
    ``auto``/``null``, else the int."""
    return None if value in (None, "auto") else int(value)


def _check_task(cfg: DictConfig) -> None:
    """A class-aware task needs a dataset with classes (``data.num_classes``)."""
    task = OmegaConf.select(cfg, "task.name", default="entity")
    if task in (None, "entity"):
        return
    if OmegaConf.select(cfg, "data.num_classes", default=None) is None:
        raise UserError(
            f"task={task} needs a dataset with classes but data.num_classes is null; use a "
            "class-aware data config (data=coco_panoptic, ade20k_panoptic, entityclass or "
            "synthetic) or set data.num_classes=<number of categories>"
        )
    _check_int(cfg, "data.num_classes", 1, "number of classes of a class-aware task")
    target = _select(cfg, "model.fusion._target_")
    if target is not None and not str(target).endswith(".ClassAwareFusion"):
        raise UserError(
            f"task={task} fuses with classes (model/fusion=class_aware, which the task selects) "
            f"but model.fusion._target_={target}; drop the model/fusion=... override"
        )


def check_values(cfg: DictConfig) -> None:
    """Type and range of every value the tasks read, before any work.

    The one validation path of the commands: the shims run it on the composed command line
    before Hydra starts (:func:`check_command_line`) and each task runs it again on its config.

    Raises:
        UserError: the first bad value (names key, value and what is allowed).
    """
    _check_task(cfg)
    _check_data(cfg)
    _check_trainer(cfg)
    _check_fusion(cfg)
    _check_inference(cfg)
    _check_optimizer(cfg)
    _check_outputs(cfg)
    _check_int(cfg, "model.criterion.num_points", 1, "sampled points per mask", optional=True)
    _check_int(cfg, "seed", 0, "random seed; null = none", optional=True)
    _check_choice(cfg, "split", ("val", "test"), "not a split")
    _check_choice(
        cfg,
        "official_task",
        (None, "instance", "panoptic", "semantic"),
        "the task of an official class-aware file; null for entity files",
    )


# --------------------------------------------------------------------------- command line


def _compose(conf_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    from cropformer.run.config import compose_config

    return compose_config(overrides, config_name=config_name, conf_dir=conf_dir)


def command_line_error(
    config_name: str,
    overrides: list[str],
    *,
    conf_dir: Path,
    multirun: bool = False,
    compose: Callable[[Path, str, list[str]], DictConfig] = _compose,
) -> str | None:
    """The first problem of a command line's overrides (unknown key or bad value), or None.

    The reference config is composed from the command's group choices only; each key override
    must name a key of it (or an open node, see :mod:`cropformer.run.config_keys`). Values are
    checked on the fully composed config of a single run (sweep jobs check their own).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = {p.parent.relative_to(conf_dir).as_posix() for p in conf_dir.rglob("*.yaml")}
    is_group = [o.key_or_group in groups or o.key_or_group.startswith("hydra/") for o in parsed]
    group_overrides = [o for o, g in zip(parsed, is_group) if g]
    fixed = [str(o.input_line) for o in group_overrides if not o.is_sweep_override()]
    variants: list[list[str]] = [fixed]
    for o in group_overrides:
        if o.is_sweep_override():  # one reference per option of a swept group
            prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(o.type, "")
            variants = [
                [*v, f"{prefix}{o.key_or_group}={choice}"]
                for v in variants
                for choice in o.sweep_string_iterator()
            ][:16]
    index: KeyIndex = merge_indexes(
        index_keys(compose(conf_dir, config_name, [x for x in v if x])) for v in variants
    )
    keys = [
        (o.key_or_group, str(o.input_line), o.type in (OverrideType.ADD, OverrideType.FORCE_ADD))
        for o, g in zip(parsed, is_group)
        if not g and o.type is not OverrideType.DEL
    ]
    message = find_unknown(keys, index, f"{config_name}.py")
    if message or multirun or any(o.is_sweep_override() for o in parsed):
        return message
    try:
        check_values(compose(conf_dir, config_name, list(overrides)))
    except UserError as err:
        return str(err)
    return None


def check_command_line(config_name: str, conf_dir: Path, argv: list[str] | None = None) -> None:
    """Exit with one ``error:`` line (code 2) if the command line has an unknown key or bad value.

    Called by the shims before ``@hydra.main``, so nothing is written yet. A composition error
    (an unknown group option such as ``model=cropformer_tinyy``, a syntax error) is one line too:
    Hydra's message with its list of available options, without its 20-line frame.
    """
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit:
        return  # Hydra prints its own usage error
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_dir:
        return
    try:
        message = command_line_error(
            args.config_name or config_name,
            list(args.overrides),
            conf_dir=conf_dir,
            multirun=bool(args.multirun),
        )
    except Exception as err:  # a composition error: Hydra's message on one line
        text = " ".join(str(err).split())
        for tail in (" Config search path:", " Set the environment variable HYDRA_FULL_ERROR"):
            text = text.split(tail)[0]
        print(f"error: {text.rstrip(' .')}", file=sys.stderr, flush=True)
        sys.exit(2)
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


# --------------------------------------------------------------------------- task values


def require(cfg: DictConfig, key: str, hint: str) -> Any:
    """``cfg[key]`` or a UserError naming the key and what to pass."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        value = None
    if value is None:
        raise UserError(f"missing required value `{key}`: {hint}")
    return value


def check_data_paths(datamodule: Any, stages: tuple[str, ...]) -> None:
    """Every annotation file and image root the run needs exists (after data preparation)."""
    keys = ["image_root"] + [f"{s}_annotations" for s in stages]
    for key in keys:
        value = getattr(datamodule, key, None)
        if value is None:
            if key == "image_root":
                continue
            raise UserError(f"data.{key} is not set; pass data.{key}=/path/to/{key}.json")
        if not Path(str(value)).exists():
            raise UserError(
                f"data.{key}={value} does not exist; pass the right path (data.{key}=...) or set "
                "DATA_ROOT to the folder holding the datasets"
            )


def pixel_decoder_setting(value: Any) -> str | None:
    """``pixel_decoder=auto|fp32|encoder|all|null`` of predict.py / eval.py, checked."""
    from cropformer.inference.predictor import PIXEL_DECODER

    if value is None or str(value) in PIXEL_DECODER:
        return None if value is None else str(value)
    raise UserError(
        f"pixel_decoder={value!r}: use auto (= encoder under bf16/fp16), fp32 (all of the pixel "
        "decoder in fp32, official), encoder (its deformable encoder in bf16, FPN and mask "
        "features fp32) or all"
    )
