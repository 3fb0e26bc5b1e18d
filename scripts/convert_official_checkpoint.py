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
``fusion_config``, ``criterion_config``, ``test_views``): the file is self-contained and holds
no absolute path.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from cropformer.model.convert import (
    build_from_official_config,
    convert_official_state_dict,
    detect_official_architecture,
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
    *, model: str | None = None, overrides: list[str] | None = None, official_config: Any = None
) -> dict[str, Any]:
    """The configs a loader rebuilds the network, fusion and criterion from (resolved, plain)."""
    from omegaconf import OmegaConf

    from cropformer.api.loading import official_network_config
    from cropformer.api.settings import OFFICIAL_TEST_SETTINGS
    from cropformer.run.config import compose_config

    if official_config is not None:
        net, views = official_network_config(official_config)
        base = compose_config(["model=cropformer_tiny"]).model  # criterion/fusion defaults only
    else:
        base = compose_config([f"model={model}", *(overrides or [])]).model
        net, views = OmegaConf.to_container(base.net, resolve=True), dict(OFFICIAL_TEST_SETTINGS)
    return {
        "net_config": net,
        "fusion_config": OmegaConf.to_container(base.fusion, resolve=True),
        "criterion_config": OmegaConf.to_container(base.criterion, resolve=True),
        "test_views": views,
    }


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
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for --model")
    args = parser.parse_args(argv)

    try:
        official = _load(args.input)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ours, unmapped = convert_official_state_dict(official)
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
        stored = stored_configs(official_config=cfg)
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
            print(f"model guessed from the keys: {name} {' '.join(overrides)}")
        with torch.device("meta"):
            net = instantiate(compose_config([f"model={name}", *overrides]).model.net)
        stored = stored_configs(model=name, overrides=overrides)
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
