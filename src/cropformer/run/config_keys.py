"""Unknown config keys: every key a command line sets must be one the code reads.

Hydra rejects ``data.crop.ratoi=0.5`` (not in the config) but suggests ``+data.crop.ratoi=0.5``,
which then runs with the key silently ignored. :func:`check_override_keys` compares the keys of
the command line with a *reference* config, composed from the same group choices without the
user's key overrides, and reports the first unknown key with the closest known one.

Keys that are legitimately open (not in the reference yet used) are accepted when:

- they are under an open node (:data:`OPEN_NODES`): ``hydra`` (Hydra checks its own keys),
  ``local`` (machine-local settings), ``tags`` (a free list), ``data.pixel_transforms`` and
  ``data.lsj`` (free-form dicts, ``null`` by default), or under a node the YAML declares as an
  empty mapping ``{}`` (e.g. ``fusion: {}`` of ``predict.yaml``: overrides merged by the task);
- they add a new entry to a collection of instantiated objects (:data:`OPEN_COLLECTIONS`):
  ``+callbacks.<new>.*`` and ``+logger.<new>.*`` (a callback or logger with its ``_target_``);
- they add a direct child of a node with ``_target_`` that the target's constructor accepts:
  ``+trainer.profiler=simple`` (a ``Trainer`` keyword), or any key of a target taking
  ``**kwargs`` (``WandbLogger``).

Nothing here imports torch; a ``_target_`` is imported only to read its signature.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig

#: nodes whose sub-keys are free (see the module docstring)
OPEN_NODES: tuple[str, ...] = ("hydra", "local", "tags", "data.pixel_transforms", "data.lsj")
#: nodes whose new entries are free (a new callback or logger, with its own ``_target_``)
OPEN_COLLECTIONS: tuple[str, ...] = ("callbacks", "logger")


@dataclass(frozen=True)
class KeyIndex:
    """The keys of a reference config: every node (``keys``), list-valued ones, ``_target_``s."""

    keys: frozenset[str]
    lists: frozenset[str]
    targets: dict[str, str]
    empty: frozenset[str] = frozenset()


def index_keys(cfg: DictConfig) -> KeyIndex:
    """Every dotted key of ``cfg`` (interpolations are not resolved)."""
    keys: set[str] = set()
    lists: set[str] = set()
    empty: set[str] = set()
    targets: dict[str, str] = {}

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            full = f"{prefix}{key!s}"
            keys.add(full)
            child = node._get_node(key)  # raw node: no resolution of ${...}
            if isinstance(child, ListConfig):
                lists.add(full)
            elif isinstance(child, DictConfig) and not child._is_none():
                if child._is_interpolation():
                    continue
                if len(child) == 0:
                    empty.add(full)
                walk(child, full + ".")
            if key == "_target_" and not child._is_interpolation():  # type: ignore[union-attr]
                targets[prefix.rstrip(".")] = str(child._value())  # type: ignore[union-attr]

    walk(cfg, "")
    return KeyIndex(frozenset(keys), frozenset(lists), targets, frozenset(empty))


def merge_indexes(indexes: Iterable[KeyIndex]) -> KeyIndex:
    """The union of several reference configs (a multirun over group options)."""
    keys: set[str] = set()
    lists: set[str] = set()
    empty: set[str] = set()
    targets: dict[str, str] = {}
    for index in indexes:
        keys |= index.keys
        lists |= index.lists
        empty |= index.empty
        targets.update(index.targets)
    return KeyIndex(frozenset(keys), frozenset(lists), targets, frozenset(empty))


def _target_params(target: str) -> set[str] | None:
    """Keyword names accepted by ``target`` (None: it takes ``**kwargs`` or cannot be read)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {name for name in sig.parameters if name != "self"}


def _under(key: str, node: str) -> bool:
    return key == node or key.startswith(node + ".")


def is_known(key: str, index: KeyIndex, added: bool) -> bool:
    """Whether ``key`` may be set: in the reference, under an open node, or accepted by a target.

    Args:
        added: the override adds the key (``+key`` / ``++key``), so it may be new.
    """
    if key in index.keys or any(_under(key, node) for node in (*OPEN_NODES, *index.empty)):
        return True
    parent, _, leaf = key.rpartition(".")
    if any(key.startswith(lst + ".") for lst in index.lists):
        return True  # an element of a list (``data.train_short_sides.0``)
    for collection in OPEN_COLLECTIONS:
        head = key.split(".")
        if added and key.startswith(collection + ".") and len(head) >= 2:
            entry = f"{collection}.{head[1]}"
            if entry not in index.keys:
                return True  # a new callback / logger entry
    if added and parent in index.targets:
        params = _target_params(index.targets[parent])
        return params is None or leaf in params
    return False


def suggest(key: str, index: KeyIndex) -> str | None:
    """The closest known key: a sibling with a similar name, else the same name elsewhere."""
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2] for k in index.keys if k.rpartition(".")[0] == parent}
    if parent in index.targets:
        siblings |= _target_params(index.targets[parent]) or set()
    match = difflib.get_close_matches(leaf, sorted(siblings), n=1, cutoff=0.7)
    if match:
        return f"{parent}.{match[0]}" if parent else match[0]
    # the same name under another node: ``data.ratio`` -> ``data.crop.ratio``
    same = sorted(
        (k for k in index.keys if k.rpartition(".")[2] == leaf), key=lambda k: (len(k), k)
    )
    return same[0] if same else None


def unknown_key_message(key: str, override: str, index: KeyIndex, command: str) -> str:
    """One line: the key, the override it came from, the closest known key."""
    hint = suggest(key, index)
    where = f"unknown config key `{key}` (in `{override}`)"
    if hint:
        return f"{where}: did you mean `{hint}`? (`python {command} --cfg job` prints every key)"
    return f"{where}: no such setting; `python {command} --cfg job` prints every key"


def find_unknown(
    keys: Sequence[tuple[str, str, bool]], index: KeyIndex, command: str
) -> str | None:
    """The message for the first unknown key of ``(key, override text, added)`` items, or None."""
    for key, override, added in keys:
        if not is_known(key, index, added):
            return unknown_key_message(key, override, index, command)
    return None
