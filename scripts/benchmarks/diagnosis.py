"""Diagnoses of missed targets (profile summaries), attached to a row's ``diagnosis`` field.

Keyed by (row id, a substring of the row's ``what``); written from torch.profiler / py-spy runs
on this machine kind. ``annotate`` adds the text to rows whose target was missed.
"""

from __future__ import annotations

from typing import Any

DIAGNOSES: dict[tuple[str, str], str] = {}


def annotate(row: dict[str, Any]) -> dict[str, Any]:
    """Attach the matching diagnosis to a row that missed its target (in place; returned)."""
    row.pop("diagnosis", None)
    if row.get("met") is not False:
        return row
    for (rid, key), text in DIAGNOSES.items():
        if row.get("row") == rid and key in row.get("what", ""):
            row["diagnosis"] = text
            break
    return row
