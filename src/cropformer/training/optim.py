"""Parameter groups, AdamW and the official poly learning-rate schedule (ref. doc §5.1).

:func:`adamw` and :func:`poly_schedule` are the ``_target_`` of ``conf/model/optimizer`` and
``conf/model/scheduler`` (composed with ``_partial_: true``); their signatures hold the defaults,
and a key they do not take fails.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)
# Swin position tables are plain nn.Parameters on the attention/backbone modules (no nn.Embedding).
_POSITION_TABLE_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "pos_embed")


@dataclass
class ParamGroupSpec:
    """One optimizer parameter group and the names of its parameters (for the printed summary)."""

    name: str
    lr: float
    weight_decay: float
    params: list[nn.Parameter] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def _is_norm(module: nn.Module, *, custom_norm_decay: bool) -> bool:
    """Whether ``module``'s parameters count as a normalisation layer's (no weight decay).

    timm / detectron2 norms subclass the torch ones; custom LayerNorm2d-like classes are caught
    by name. Modules marked ``official_optimizer_norm = False`` (HorNet's LayerNorms) are norms
    that the official optimizer does not recognise (it checks torch classes), so with
    ``custom_norm_decay`` they get weight decay as officially.
    """
    if custom_norm_decay and getattr(module, "official_optimizer_norm", True) is False:
        return False
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def build_param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float = 0.1,
    no_decay_norm: bool = True,
    no_decay_embedding: bool = True,
    custom_norm_decay: bool = True,
    backbone_key: str = "backbone",
) -> list[ParamGroupSpec]:
    """Split trainable parameters as the official ``build_optimizer`` does.

    - any parameter whose module path contains ``backbone_key`` gets ``lr * backbone_lr_mult``;
    - weight decay 0 for parameters of normalisation layers, ``nn.Embedding`` weights (queries,
      level embeddings) and Swin position tables (when the switches are on);
    - ``custom_norm_decay`` (official): norm layers the official optimizer does not recognise
      as norms (HorNet's own LayerNorm class) keep weight decay; False: none for them either.

    Every trainable parameter lands in exactly one group; shared parameters are counted once.
    """
    groups: dict[tuple[bool, bool], ParamGroupSpec] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            is_backbone = backbone_key in full_name.split(".") or backbone_key in module_name
            is_norm = _is_norm(module, custom_norm_decay=custom_norm_decay)
            no_decay = (no_decay_norm and is_norm) or (
                no_decay_embedding
                and (isinstance(module, nn.Embedding) or param_name in _POSITION_TABLE_NAMES)
            )
            key = (is_backbone, no_decay)
            if key not in groups:
                groups[key] = ParamGroupSpec(
                    name=("backbone" if is_backbone else "head")
                    + ("/no_decay" if no_decay else ""),
                    lr=lr * (backbone_lr_mult if is_backbone else 1.0),
                    weight_decay=0.0 if no_decay else weight_decay,
                )
            groups[key].params.append(param)
            groups[key].names.append(full_name)
    return [groups[k] for k in sorted(groups)]


def build_adamw(
    groups: Iterable[ParamGroupSpec],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over the groups; each group carries its own lr and weight decay."""
    param_groups = [
        {"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay, "name": g.name}
        for g in groups
        if g.params
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), eps=eps)  # type: ignore[arg-type]


def poly_lambda(
    *, max_steps: int, power: float = 0.9, warmup_steps: int = 0, warmup_factor: float = 1.0
):  # type: ignore[no-untyped-def]
    """Multiplier for ``LambdaLR``: ``(1 - step / max_steps) ** power`` with optional linear warmup.

    Matches detectron2's ``WarmupPolyLR`` (constant ending 0) for ``warmup_steps = 0``.
    """
    if max_steps <= 0:
        raise ValueError(f"poly schedule needs max_steps > 0, got {max_steps}")

    def factor(step: int) -> float:
        warm = 1.0
        if warmup_steps > 0 and step < warmup_steps:
            alpha = step / warmup_steps
            warm = warmup_factor * (1 - alpha) + alpha
        progress = min(step, max_steps) / max_steps
        return warm * math.pow(1.0 - progress, power)

    return factor


def adamw(
    model: nn.Module,
    *,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    backbone_lr_mult: float = 0.1,
    no_decay_norm: bool = True,
    no_decay_embedding: bool = True,
    custom_norm_decay: bool = True,
) -> torch.optim.AdamW:
    """The official optimizer of ``model`` (``model.optimizer``, composed with ``_partial_``).

    Parameter groups as :func:`build_param_groups`, AdamW as :func:`build_adamw`; the printed
    group table is logged.
    """
    groups = build_param_groups(
        model,
        lr=lr,
        weight_decay=weight_decay,
        backbone_lr_mult=backbone_lr_mult,
        no_decay_norm=no_decay_norm,
        no_decay_embedding=no_decay_embedding,
        custom_norm_decay=custom_norm_decay,
    )
    log.info("optimizer parameter groups:\n" + format_param_groups(groups))
    return build_adamw(groups, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps)


def poly_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    power: float = 0.9,
    warmup_steps: int = 0,
    warmup_factor: float = 1.0,
    max_steps: int | None = None,
    trainer_max_steps: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The official poly schedule, stepped per optimizer step (``model.scheduler``, ``_partial_``).

    ``max_steps`` null: the trainer's ``max_steps`` (passed by the module as ``trainer_max_steps``).
    """
    steps = max_steps or trainer_max_steps
    if steps is None or steps <= 0:
        raise ValueError(
            "the poly schedule needs trainer.max_steps > 0 (or model.scheduler.max_steps)"
        )
    factor = poly_lambda(
        max_steps=int(steps), power=power, warmup_steps=warmup_steps, warmup_factor=warmup_factor
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def format_param_groups(groups: Iterable[ParamGroupSpec]) -> str:
    """A table of the groups: name, parameter tensors, parameter count, lr, weight decay."""
    lines = [f"{'group':<20}{'tensors':>9}{'params':>14}{'lr':>11}{'wd':>8}"]
    for g in groups:
        count = sum(p.numel() for p in g.params)
        lines.append(
            f"{g.name:<20}{len(g.params):>9}{count:>14,}{g.lr:>11.2e}{g.weight_decay:>8.3g}"
        )
    return "\n".join(lines)
