"""One vocabulary of metric names for the console, CSV/W&B, ``metrics.json`` and sweep tables.

The canonical name is the logged one, ``<split>/<metric>`` (``val/entity_ap50``), as printed at
validation and sent to the CSV and W&B loggers. ``metrics.json`` of ``train.py`` stores the same
names with ``/`` -> ``_`` (``val_entity_ap50``, plus ``entity_ap`` = ``val/entity_ap``);
``eval.py`` stores the bare metric (``entity_ap50``) next to ``"split"``. :func:`canonical`
accepts all three spellings and :func:`lookup` finds a metric in either file.
"""

from __future__ import annotations

from typing import Any

SPLITS: tuple[str, ...] = ("val", "test")
#: metrics of the evaluation (percent, except the image count)
METRICS: tuple[str, ...] = (
    "entity_ap",
    "entity_ap50",
    "entity_ap75",
    "entity_ap_s",
    "entity_ap_m",
    "entity_ap_l",
    "entity_ar100",
    "entity_ar100_50",
    "boundary_ap",
    "entity_num_images",
)
#: facts of a run that sweep tables may show (not split-specific)
RUN_FACTS: tuple[str, ...] = ("minutes", "steps", "skipped_steps")


def known_names() -> list[str]:
    """Every canonical name: ``val/entity_ap`` ... ``test/entity_num_images``, then run facts."""
    return [f"{s}/{m}" for s in SPLITS for m in METRICS] + list(RUN_FACTS)


def canonical(name: str) -> str:
    """``entity_ap50`` | ``val_entity_ap50`` | ``val/entity_ap50`` -> ``val/entity_ap50``.

    Raises:
        ValueError: not a known metric (the message lists the known ones).
    """
    text = name.strip()
    if text in RUN_FACTS:
        return text
    for split in SPLITS:
        for sep in ("/", "_"):
            if text.startswith(split + sep) and text[len(split) + 1 :] in METRICS:
                return f"{split}/{text[len(split) + 1 :]}"
    if text in METRICS:
        return f"val/{text}"
    raise ValueError(
        f"unknown metric {name!r}; known: {', '.join(known_names())} "
        "(`entity_ap50` and `val_entity_ap50` are accepted for `val/entity_ap50`)"
    )


def lookup(metrics: dict[str, Any], name: str) -> Any:
    """The value of canonical metric ``name`` in a ``metrics.json`` of train or eval (or None)."""
    if name in RUN_FACTS:
        return metrics.get(name)
    split, _, metric = name.partition("/")
    for key in (name, f"{split}_{metric}"):
        if key in metrics:
            return metrics[key]
    if metrics.get("split", "val") == split and metric in metrics:
        return metrics[metric]
    return None
