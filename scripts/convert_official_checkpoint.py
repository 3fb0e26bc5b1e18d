"""Convert an official detectron2 CropFormer / Mask2Former checkpoint to this package.

Usage:
    python scripts/convert_official_checkpoint.py IN.pth OUT.pt [--model cropformer_swinl]
        [--official-config config.yaml] [--prefix net.] [overrides ...]

The network the weights must fit is, in this order: built from ``--official-config`` (a resolved
official yacs config); or composed from ``conf/`` with ``model=<--model>`` and the extra Hydra
overrides; or guessed from the keys (R50 / Swin-T / Swin-L / HorNet-L, CropFormer if the
association module is present, query count from ``query_feat``). The converted weights are
loaded with ``strict=True``; official keys that no rule maps are listed. OUT holds
``{"state_dict": ..., "model": name, "source": IN's file name, "unmapped": [...]}`` (keys of
``CropFormer``; ``--prefix net.`` gives the LightningModule's keys) and what a loader needs to
rebuild the network without our config tree or the official yaml (``net_config``,
``fusion_config``, ``criterion_config``, ``test_views``, ``task``): the file is self-contained
and holds no absolute path.

Class-aware files (a class head over C + 1 > 2 outputs, e.g. Mask2Former COCO panoptic, C = 133)
need their task: ``task=panoptic data=coco_panoptic`` (the class count is then checked against the
data's: one error line names the key, both shapes and the override), or ``task=panoptic`` alone
(C taken from the head), or an official config's test flags. ``--classes categories.json`` stores
the class set with the file, so that predict.py and ``load_segmenter`` name the classes.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf

from cropformer.model.convert import (
    build_from_official_config,
    class_head_shape,
    convert_official_state_dict,
    detect_official_architecture,
    official_class_settings,
    official_num_queries,
)
from cropformer.utils.errors import UserError


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"input checkpoint {path} does not exist")
    if path.suffix == ".pkl":  # detectron2 model-zoo pickles (numpy arrays); trusted files only
        with path.open("rb") as f:
            data = pickle.load(f, encoding="latin1")
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(data).__name__})")
    return data


def _guess_model(sd: dict[str, torch.Tensor]) -> tuple[str, list[str]]:
    name = detect_official_architecture(sd)
    queries = official_num_queries(sd)
    overrides = [] if queries is None else [f"model.net.decoder.num_queries={queries}"]
    return name, overrides


def _fresh_association(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Initialised association weights of a CPU copy of ``net``'s association module."""
    import copy

    module = copy.deepcopy(net.association).to_empty(device="cpu")  # type: ignore[union-attr]
    for layer in module.modules():
        reset = getattr(layer, "_reset_parameters", None) or getattr(
            layer, "reset_parameters", None
        )
        if callable(reset):
            reset()
    module.apply(_xavier)
    return {f"association.{k}": v for k, v in module.state_dict().items()}


def _xavier(layer: torch.nn.Module) -> None:
    # the official association layers: xavier-uniform matrices, zero attention biases
    for p in layer.parameters(recurse=False):
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)


def stored_configs(
    *,
    model: str | None = None,
    overrides: list[str] | None = None,
    official_config: Any = None,
    task_overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The configs a loader rebuilds the network, fusion and criterion from (resolved, plain),
    and the task (``task=...`` in ``overrides``; ``task_overrides`` with an official config)."""
    from omegaconf import OmegaConf

    from cropformer.api.loading import official_network_config
    from cropformer.api.settings import OFFICIAL_TEST_SETTINGS
    from cropformer.model.convert import official_class_settings
    from cropformer.run.config import compose_config

    if official_config is not None:
        net, views = official_network_config(official_config)
        # criterion/fusion defaults only (a class-aware config: its task's)
        cfg = compose_config(["model=cropformer_tiny", *(task_overrides or [])])
    else:
        cfg = compose_config([f"model={model}", *(overrides or [])])
        net, views = (
            OmegaConf.to_container(cfg.model.net, resolve=True),
            dict(OFFICIAL_TEST_SETTINGS),
        )
    task = str(OmegaConf.select(cfg, "task.name", default="entity"))
    fusion = OmegaConf.to_container(cfg.model.fusion, resolve=True)
    if official_config is not None and task != "entity":
        fusion = {**fusion, **official_class_settings(official_config)[1]}  # type: ignore[dict-item]
    return {
        "net_config": net,
        "fusion_config": fusion,
        "criterion_config": OmegaConf.to_container(cfg.model.criterion, resolve=True),
        "test_views": views,
        "task": task,
    }


def _class_problem(
    head: tuple[int, ...] | None, built: int, task: str, source: str, official: bool
) -> str | None:
    """Why the file's class head does not fit what the options build (None when it does)."""
    from cropformer.model.convert import class_head_mismatch

    if head is None:
        return None
    found = head[0] - 1
    if found != built:
        if official:
            fix = "pass the official config this file was trained with"
        elif found == 1:
            fix = "it is an entity model: drop task=/data= (or pass data.num_classes=1)"
        else:
            fix = (
                f"pass task=<its task> with data=<its dataset> or data.num_classes={found} "
                "(e.g. task=panoptic data=coco_panoptic for Mask2Former COCO panoptic)"
            )
        return str(class_head_mismatch(head, built, source=source, fix=fix))
    if found > 1 and task == "entity":
        return (
            f"the file is class-aware ({found} classes + no-object): pass task=instance|"
            f"panoptic|semantic (and data=<its dataset> or data.num_classes={found})"
        )
    return None


def _class_list(path: Path, num_classes: int | None) -> list[dict[str, Any]]:
    """``--classes``: a categories json checked against the class head."""
    from cropformer.data.formats.entityseg import read_categories

    cs = read_categories(path)
    if num_classes is not None and len(cs) != num_classes:
        raise ValueError(
            f"--classes {path} has {len(cs)} classes but the class head predicts {num_classes}"
        )
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in cs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="official checkpoint (.pth/.pkl)")
    parser.add_argument("output", type=Path, help="converted weights (.pt)")
    parser.add_argument("--model", help="our model config name, e.g. cropformer_swinl")
    parser.add_argument("--official-config", type=Path, help="resolved official config (yaml)")
    parser.add_argument("--prefix", default="", help="prefix for every key (e.g. 'net.')")
    parser.add_argument(
        "--init-association",
        action="store_true",
        help="allow a Mask2Former checkpoint for a CropFormer model: the association module "
        "keeps its fresh initialisation (the official way to start CropFormer training)",
    )
    parser.add_argument(
        "--classes",
        type=Path,
        help="a class-aware file's class set, stored with it: a categories json (a list, or a "
        "json with `categories`: id, name, isthing), in the order it was trained on",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="extra Hydra overrides for --model; a class-aware file needs task=<its task> (and "
        "data=<its dataset> or data.num_classes=C, inferred when no data override is given)",
    )
    args = parser.parse_args(argv)

    try:
        official = _load(args.input)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ours, unmapped = convert_official_state_dict(official)
    head = class_head_shape(ours)
    num_classes = None if head is None else head[0] - 1
    if args.official_config is not None:
        if not args.official_config.is_file():
            print(
                f"error: --official-config {args.official_config} does not exist", file=sys.stderr
            )
            return 2
        cfg = yaml.safe_load(args.official_config.read_text())
        with torch.device("meta"):  # only the key/shape check is needed: no memory, no init
            net = build_from_official_config(cfg)
        name = f"official config {args.official_config.name}"
        given = [o.split("=", 1)[1] for o in args.overrides if o.startswith("task=")]
        task = given[-1] if given else (official_class_settings(cfg)[0] or "entity")
        task = task if num_classes not in (None, 1) else "entity"
        built = int(cfg["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"])
        source = f"{name} (MODEL.SEM_SEG_HEAD.NUM_CLASSES)"
        problem = _class_problem(head, built, task, source, official=True)
        task_overrides = (
            [] if task == "entity" else [f"task={task}", f"data.num_classes={num_classes}"]
        )
        if problem is None:
            stored = stored_configs(official_config=cfg, task_overrides=task_overrides)
    else:
        from hydra.utils import instantiate

        from cropformer.run.config import compose_config

        inner = official.get("model", official)
        if args.model:
            name, overrides = args.model, list(args.overrides)
        else:
            try:
                name, overrides = _guess_model(inner)
            except UserError as err:
                print(f"error: {args.input}: {err}", file=sys.stderr)
                return 2
            overrides += list(args.overrides)
            if num_classes not in (None, 1) and not any(
                o.startswith("data") for o in args.overrides
            ):
                overrides.append(f"data.num_classes={num_classes}")  # the class head's C
            print(f"model guessed from the keys: {name} {' '.join(overrides)}")
        composed = compose_config([f"model={name}", *overrides])
        with torch.device("meta"):
            net = instantiate(composed.model.net)
        source = " ".join([f"model={name}", *overrides])
        problem = _class_problem(
            head,
            int(composed.model.net.decoder.num_classes),
            str(OmegaConf.select(composed, "task.name", default="entity")),
            source,
            official=False,
        )
        if problem is None:
            stored = stored_configs(model=name, overrides=overrides)
    if problem is not None:
        print(f"error: {args.input}: {problem}", file=sys.stderr)
        return 1
    if args.classes is not None:
        if stored["task"] == "entity":
            print(
                f"error: --classes {args.classes}: an entity model has no classes", file=sys.stderr
            )
            return 2
        try:
            stored["classes"] = _class_list(args.classes, num_classes)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif stored["task"] != "entity":
        print(
            "note: no class set stored (--classes): eval.py takes the data's; predict.py and "
            "load_segmenter need official_classes=<categories json>"
        )
    try:
        result = net.load_state_dict(ours, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        print(f"error: the weights do not fit the model {name}: {err}", file=sys.stderr)
        return 1
    print(f"converted {len(ours)} tensors; unmapped: {len(unmapped)}")
    for key in unmapped:
        print(f"  unmapped official key: {key}")
    missing = list(result.missing_keys)
    if args.init_association and missing and all(k.startswith("association.") for k in missing):
        # official: a Mask2Former checkpoint loads into CropFormer; only the association is new
        fresh = _fresh_association(net)
        ours.update(fresh)
        missing = []
        print(f"association module initialised fresh ({len(fresh)} tensors)")
    if missing or result.unexpected_keys:
        for key in missing:
            print(f"  missing in the checkpoint: {key}", file=sys.stderr)
        for key in result.unexpected_keys:
            print(f"  not in our model: {key}", file=sys.stderr)
        print("error: strict loading failed (see the keys above)", file=sys.stderr)
        return 1
    state = {args.prefix + k: v.contiguous() for k, v in ours.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": state,
            "model": name,
            "source": args.input.name,
            "unmapped": unmapped,
            **stored,
        },
        args.output,
    )
    print(f"loaded with strict=True; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
