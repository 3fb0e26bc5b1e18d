"""The one checkpoint loader: any weights file -> network, fusion and the settings it stores.

    loaded = read_checkpoint("last.ckpt")          # ours, a converted file or an official .pth/.pkl
    net, fusion = loaded.build()                    # plain modules, weights loaded strictly

``load_segmenter`` (inference, no LightningModule), ``eval.py`` (which wraps the same network in
``CropFormerModule.from_loaded`` for Lightning's validation loop) and ``train.py ckpt=<weights
file>`` all go through here; the weights of every format are read by one function
(``model.checkpoint_io.network_state``), also used by ``model.init_checkpoint``.

A checkpoint of this platform is self-contained: it stores the network, criterion and fusion
configs (``hyper_parameters``), its weights and the data config it was trained with (the
test-time views). Nothing else is read: not the ``init_checkpoint`` it started from (provenance
only), not its run folder, and no path stored inside it, so it loads after being copied
anywhere. Official files need our model configs (``conf/model``) or their own yaml.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    model config they were built with, the training step, the stored test-time views, and the
    file's identity (size and content hash: what produced a folder of outputs)."""

    path: Path
    kind: str
    model: str
    step: int | None
    stored_views: Mapping[str, Any]
    size: int = 0
    sha256: str = ""

    def describe(self) -> str:
        step = "?" if self.step is None else str(self.step)
        return f"{self.path} ({self.kind}, {self.model}, step {step})"

    def identity(self) -> dict[str, Any]:
        """What names these weights wherever the file lies (no path: shards and copies agree)."""
        return {
            "name": self.path.name,
            "kind": self.kind,
            "model": self.model,
            "step": self.step,
            "bytes": self.size,
            "sha256": self.sha256,
        }


@dataclass
class LoadedCheckpoint:
    """A read checkpoint: the configs to build its parts and the network's weights."""

    net_config: dict[str, Any]
    criterion_config: dict[str, Any]
    fusion_config: dict[str, Any]
    state: dict[str, Any] = field(repr=False)
    info: CheckpointInfo
    #: the class set of a class-aware checkpoint (categories json list), None for entity models
    classes: Any = None
    #: the task it was trained for (``entity``, ``instance``, ``panoptic``, ``semantic``): which
    #: metric ``eval.py`` computes; official and converted files are entity models
    task: str = "entity"
    #: the metric options it was trained with (e.g. ``boundary: true``): eval.py reports the same
    metric: dict[str, Any] = field(default_factory=dict)

    def build(self) -> tuple[Any, Any]:
        """(network with the weights, fusion): plain ``nn.Module``s in eval mode on the CPU.

        Raises:
            UserError: a class-aware model without its class set (official files:
                ``official_classes``), or a bad fusion setting.
        """
        from hydra.utils import instantiate

        if self.task != "entity" and not self.classes:
            raise UserError(
                f"ckpt={self.info.path} is a class-aware {self.task} model without a class set: "
                "pass official_classes=<categories json: id, name, isthing of each class, in the "
                "order it was trained on> (eval.py takes the data's)"
            )

        net = instantiate(self.net_config)
        self.load_into(net)
        try:
            fusion = instantiate(self.fusion_config)
        except Exception as err:  # a bad fusion setting (Hydra wraps the constructor's error)
            cause = err.__cause__ or err
            raise UserError(f"ckpt={self.info.path}: fusion settings: {cause}") from err
        if self.classes and hasattr(fusion, "set_classes"):
            from cropformer.data.categories import CategorySet

            cs = CategorySet.from_json(self.classes)
            fusion.set_classes(cs.isthing, ids=cs.ids, names=cs.names)
        return net.eval(), fusion

    def load_into(self, net: Any) -> None:
        """Load the weights into a network built from ``net_config`` (strictly, one error)."""
        hint = (
            "pass the right model=... or official_config=<the official yaml>"
            if self.info.kind != "lightning"
            else "the file is damaged or was written by another version of this package"
        )
        own = net.state_dict()
        bad = [k for k, v in self.state.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise UserError(
                f"ckpt={self.info.path}: the weights do not fit {self.info.model}: "
                f"{len(bad)} shapes differ (first: {bad[0]} {tuple(self.state[bad[0]].shape)} in "
                f"the file, {tuple(own[bad[0]].shape)} built); {hint}"
            )
        result = net.load_state_dict(self.state, strict=False)
        problems = list(result.missing_keys) + list(result.unexpected_keys)
        if problems:
            raise UserError(
                f"ckpt={self.info.path}: the weights do not fit {self.info.model}: "
                f"{len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected "
                f"(first: {problems[0]}); {hint}"
            )


def read_checkpoint(
    checkpoint: str | Path,
    *,
    fusion: Mapping[str, Any] | None = None,
    model: str | Mapping[str, Any] | None = None,
    model_overrides: Sequence[str] = (),
    official_config: str | Path | None = None,
    official_task: str | None = None,
    official_classes: Any = None,
) -> LoadedCheckpoint:
    """Read any checkpoint file, fusion settings overridden.

    Args:
        checkpoint: ours (``.ckpt``), a converted file (``scripts/convert_official_checkpoint``),
            or an official detectron2 ``.pth``/``.pkl`` (converted in memory).
        fusion: fusion keys to override (None values keep the stored/official ones).
        model, model_overrides: our model config for an official/converted file: a ``model=``
            name (e.g. ``cropformer_swinl``) with overrides, or an already composed ``model`` node
            (``predict.py model=...``); default: guessed from the keys.
        official_config: the official (resolved) yaml config of an official file: builds the
            network with its exact sizes and takes its test sizes (and, class-aware, its task
            and test thresholds).
        official_task: the task of an official class-aware file (a class head over C + 1 > 2
            outputs, e.g. Mask2Former COCO panoptic): ``instance``, ``panoptic`` or
            ``semantic``; default: its ``official_config``'s test flags.
        official_classes: the class set of an official class-aware file (a categories json
            file, or its ``categories`` list: ``id``, ``name``, ``isthing``); without it the
            classes come from the data (``eval.py``); inference needs them.

    Raises:
        UserError: unreadable file, unknown format, weights that do not fit, or a class head
            that disagrees with the given task / classes / model (one line each).
    """
    from cropformer.inference.class_fusion import check_fusion_options
    from cropformer.model.checkpoint_io import checkpoint_kind, network_state, read_weights_file

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt={checkpoint}: file not found")
    try:
        stored = read_weights_file(path)
    except Exception as err:  # any unpickling failure: not a weights file
        raise UserError(f"ckpt={path}: cannot read it as a checkpoint ({err})") from err
    kind = checkpoint_kind(stored)
    if kind == "unknown":
        raise UserError(
            f"ckpt={path}: neither a checkpoint of this platform (state_dict + hyper_parameters) "
            "nor an official detectron2 CropFormer/Mask2Former file (backbone.* and "
            "sem_seg_head.* keys)"
        )
    state, unmapped = network_state(stored)
    if unmapped:
        raise UserError(
            f"ckpt={path}: {len(unmapped)} official keys map to nothing in this package "
            f"(first: {unmapped[0]}); is it a CropFormer/Mask2Former checkpoint?"
        )
    overrides = {k: v for k, v in (fusion or {}).items() if v is not None}
    identity: dict[str, Any] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    if kind == "lightning":
        given = [
            k
            for k, v in (
                ("model", model),
                ("official_config", official_config),
                ("official_task", official_task),
                ("official_classes", official_classes),
            )
            if v is not None
        ]
        if given:
            raise UserError(
                f"ckpt={path} is a checkpoint of this platform: it rebuilds its own network, "
                f"task and classes; drop {'=/'.join(given)}= (they are for official files)"
            )
        hparams = stored["hyper_parameters"]
        check_fusion_options(_plain(hparams.get("fusion") or {}), overrides)
        info = CheckpointInfo(
            path=path,
            kind=kind,
            model=_model_name(hparams.get("net") or {}),
            step=_int_or_none(stored.get("global_step")),
            stored_views=views_from_data_config(stored.get("data_config") or {}),
            **identity,
        )
        return LoadedCheckpoint(
            net_config=_plain(hparams["net"]),
            criterion_config=_plain(hparams["criterion"]),
            fusion_config={**_plain(hparams.get("fusion") or {}), **overrides},
            state=state,
            info=info,
            classes=stored.get("classes"),
            task=str(hparams.get("task") or "entity"),
            metric=_plain(hparams.get("metric") or {}),
        )
    if kind == "converted" and "net_config" in stored and model is None and not official_config:
        # a converted file that carries its configs (scripts/convert_official_checkpoint.py)
        task = str(stored.get("task") or "entity")
        if official_task is not None and official_task != task:
            raise UserError(
                f"ckpt={path} is a converted {task} model (its configs are stored); drop "
                f"official_task={official_task}"
            )
        classes = stored.get("classes")
        if official_classes is not None:
            classes = _official_class_list(official_classes, num_classes=_head_classes(state))
        check_fusion_options(dict(stored["fusion_config"]), overrides)
        info = CheckpointInfo(
            path=path,
            kind=kind,
            model=str(stored.get("model") or _model_name(stored["net_config"])),
            step=None,
            stored_views={**OFFICIAL_TEST_SETTINGS, **(stored.get("test_views") or {})},
            **identity,
        )
        return LoadedCheckpoint(
            net_config=dict(stored["net_config"]),
            criterion_config=dict(stored["criterion_config"]),
            fusion_config={**dict(stored["fusion_config"]), **overrides},
            state=state,
            info=info,
            classes=classes,
            task=task,
        )
    if kind == "converted":
        model = model if model is not None else str(stored["model"])
        step = None
    else:
        step = _int_or_none(stored.get("iteration")) if isinstance(stored, Mapping) else None
    from cropformer.model.convert import class_head_mismatch

    head = _class_head(state)
    official_cfg = _read_official_config(official_config)
    task, official_fusion = _official_task(path, head, official_task, official_cfg)
    num_classes = None if head is None else head[0] - 1
    base, net_cfg, name, views = _foreign_configs(
        path, stored, model, model_overrides, official_config, official_cfg, task, num_classes
    )
    if head is not None:
        built = _built_classes(net_cfg, official_cfg)
        if built is not None and built != head[0] - 1:
            raise class_head_mismatch(
                head,
                built,
                source=name if official_cfg is None else f"{name} (MODEL.SEM_SEG_HEAD.NUM_CLASSES)",
                fix=(
                    f"pass model.net.decoder.num_classes={head[0] - 1}"
                    if official_cfg is None
                    else "pass the official config this file was trained with"
                ),
            )
    classes = None
    if official_classes is not None:
        if task == "entity":
            raise UserError(
                f"official_classes={official_classes}: ckpt={path} is an entity model (class head "
                f"{head}); drop official_classes="
            )
        classes = _official_class_list(official_classes, num_classes=num_classes)
    fusion_base = {**_plain(base["fusion"]), **official_fusion}
    check_fusion_options(fusion_base, overrides)
    info = CheckpointInfo(
        path=path, kind=kind, model=name, step=step, stored_views=views, **identity
    )
    return LoadedCheckpoint(
        net_config=net_cfg,
        criterion_config=_plain(base["criterion"]),
        fusion_config={**fusion_base, **overrides},
        state=state,
        info=info,
        classes=classes,
        task=task,
    )


def _class_head(state: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The converted weights' class head shape (C + 1, hidden), None without one."""
    from cropformer.model.convert import class_head_shape, official_num_classes

    official_num_classes(state)  # a head of fewer than 2 rows: one line
    shape = class_head_shape(state)
    return shape if shape is not None and len(shape) == 2 else None


def _head_classes(state: Mapping[str, Any]) -> int | None:
    head = _class_head(state)
    return None if head is None else head[0] - 1


def _read_official_config(official_config: str | Path | None) -> dict[str, Any] | None:
    if official_config is None:
        return None
    import yaml

    cfg_path = Path(official_config).expanduser()
    if not cfg_path.is_file():
        raise UserError(f"official_config={official_config}: file not found")
    loaded = yaml.safe_load(cfg_path.read_text())
    if not isinstance(loaded, dict):
        raise UserError(f"official_config={official_config}: not a yaml mapping")
    return loaded


def _official_task(
    path: Path,
    head: tuple[int, ...] | None,
    official_task: str | None,
    official_cfg: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any]]:
    """(task, fusion settings of its official config) of an official / converted file: entity
    for a class head of 2 outputs, else ``official_task`` or its config's test flags."""
    from cropformer.inference.class_fusion import CLASS_TASKS
    from cropformer.model.convert import CLASS_HEAD_KEY, official_class_settings

    if official_task is not None and official_task not in CLASS_TASKS:
        raise UserError(
            f"official_task={official_task!r}: use one of {', '.join(CLASS_TASKS)} (the task of "
            "an official class-aware file; entity files need none)"
        )
    if head is None or head[0] == 2:
        if official_task is not None:
            raise UserError(
                f"official_task={official_task}: ckpt={path} is an entity model (official key "
                f"{CLASS_HEAD_KEY!r} has shape {head}: 1 entity class + no-object); drop it"
            )
        return "entity", {}
    config_task, settings = (
        official_class_settings(official_cfg) if official_cfg is not None else (None, {})
    )
    task = official_task or config_task
    if task is None:
        raise UserError(
            f"ckpt={path} is a class-aware model (official key {CLASS_HEAD_KEY!r} has shape "
            f"{head}: {head[0] - 1} classes + no-object); pass official_task=instance|panoptic|"
            "semantic (its Mask2Former recipe: COCO panoptic = panoptic)"
        )
    return task, settings


def _built_classes(
    net_cfg: Mapping[str, Any], official_cfg: Mapping[str, Any] | None
) -> int | None:
    """The class count a network config builds (None when it does not say)."""
    if official_cfg is not None:
        try:
            return int(official_cfg["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"])
        except (KeyError, TypeError, ValueError):
            return None
    value = (net_cfg.get("decoder") or {}).get("num_classes")
    return int(value) if isinstance(value, int) else None


def _official_class_list(source: Any, *, num_classes: int | None) -> list[dict[str, Any]]:
    """``official_classes`` (a categories json file or list) as a checked categories list."""
    from cropformer.data.formats.entityseg import read_categories
    from cropformer.model.convert import CLASS_HEAD_KEY

    try:
        cs = read_categories(str(source) if isinstance(source, (str, Path)) else source)
    except (OSError, ValueError) as err:
        raise UserError(f"official_classes={source}: {err}") from err
    if num_classes is not None and len(cs) != num_classes:
        raise UserError(
            f"official_classes={source} has {len(cs)} classes but official key "
            f"{CLASS_HEAD_KEY!r} predicts {num_classes} (+ no-object); give the file's class set"
        )
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in cs]


def _foreign_configs(
    path: Path,
    stored: Any,
    model: str | Mapping[str, Any] | None,
    model_overrides: Sequence[str],
    official_config: str | Path | None,
    official_cfg: Mapping[str, Any] | None,
    task: str,
    num_classes: int | None,
) -> tuple[Any, dict[str, Any], str, dict[str, Any]]:
    """An official (or converted) file: (model node, network config, name, test views).

    A class-aware file (``task`` not entity) gets the class-aware fusion and criterion of its
    task over its ``num_classes`` (``conf/task``), whatever gives the network.
    """
    from cropformer.model.checkpoint_io import guess_official_model, official_weights
    from cropformer.run.config import compose_config

    # task=<t> data.num_classes=<C>: the task group's class head, criterion and fusion
    classes = [] if task == "entity" else [f"task={task}", f"data.num_classes={num_classes}"]
    views = dict(OFFICIAL_TEST_SETTINGS)
    if official_cfg is not None:
        net_cfg, views = official_network_config(official_cfg)
        # criterion/fusion defaults only
        base = compose_config(["model=cropformer_tiny", *classes]).model
        return base, net_cfg, f"official config {Path(str(official_config)).name}", views
    if isinstance(model, Mapping):  # composed by Hydra (predict.py / eval.py model=...)
        net_cfg = _plain(model["net"])
        if classes:
            base = compose_config(["model=cropformer_tiny", *classes]).model
            return base, net_cfg, _model_name(net_cfg), views
        return model, net_cfg, _model_name(net_cfg), views
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
        base = compose_config([f"model={model}", *classes, *model_overrides]).model
    except UserError:
        raise
    except Exception as err:  # unknown model name or override
        raise UserError(f"model={model} {' '.join(model_overrides)}: {err}") from err
    return base, _plain(base.net), str(model), views


def official_network_config(official_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict]:
    """(network config, test views) of an official (resolved yacs) config."""
    net_cfg: dict[str, Any] = {
        "_target_": "cropformer.model.convert.build_from_official_config",
        "_convert_": "all",
        "_recursive_": False,
        "cfg": dict(official_cfg),
    }
    return net_cfg, {**OFFICIAL_TEST_SETTINGS, **views_from_official_config(official_cfg)}


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if views["num_crops"] and decoder == "I-O":
        # the crops still run through the network, but I-O reads the full view's image-level pass
        crops += " (computed, unused by I-O: full view only)"
    return (
        f"test views {views['short_side']}/{views['max_size']}, {crops}, fusion {decoder} "
        f"({quirks} scores), precision {precision}; checkpoint {info.describe()}"
    )
