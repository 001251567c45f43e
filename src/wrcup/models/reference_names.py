"""The authors' state-dict names of :class:`~wrcup.models.upsampler.WRCUpsampler` (their released 2× network
names the same modules differently; the table is documented in docs/DESIGN.md).

Every entry is matched by its exact name through :data:`REFERENCE_MODULE_NAMES`, never by position, so their
entries load correctly in any order.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

__all__ = ["REFERENCE_MODULE_NAMES", "reference_key_map", "checked_reference_state", "rename_reference_keys"]

# The authors' name for each of our module paths, in the order their state dict lists them (the key names of their
# released 2× network; documented in docs/DESIGN.md). Names below these modules are the same on both sides,
# except that a Bottleneck's shortcut is their "downsample". The table does not depend on the sizes.
REFERENCE_MODULE_NAMES = (
    ("operator", "up1.up"),
    ("feature_path", "up1.conv"),
    ("fuse", "up1.conv_1.0"),
    ("head", "outc"),
    ("image_branch.stem", "in_conv"),
    ("image_branch.quarter", "image_convs_1"),
    ("image_branch.coarse", "image_convs_2"),
)
_REFERENCE_CHILD_NAMES = {"shortcut": "downsample"}


def reference_key_map(module: nn.Module) -> dict[str, str]:
    """Our state-dict name → the authors' name, for every entry of ``module``, in the authors' order.

    Built from the module's own entries with :data:`REFERENCE_MODULE_NAMES`, so it covers any dim, patch size
    and operator (a folded copy from :func:`~wrcup.models.fold_batchnorm` simply has fewer entries).
    """
    ours = list(module.state_dict())
    mapping: dict[str, str] = {}
    for our_module, their_module in REFERENCE_MODULE_NAMES:
        for key in ours:
            if key.startswith(our_module + "."):
                rest = key[len(our_module) + 1:].split(".")
                mapping[key] = ".".join([their_module] + [_REFERENCE_CHILD_NAMES.get(p, p) for p in rest])
    unnamed = [k for k in ours if k not in mapping]
    if unnamed or len(set(mapping.values())) != len(mapping):  # a module added without a table entry
        raise RuntimeError(f"REFERENCE_MODULE_NAMES does not name every entry exactly once: {unnamed[:3]}")
    return mapping


def checked_reference_state(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                            strict: bool = True) -> dict[str, torch.Tensor]:
    """``state_dict`` (named like ours or like the authors' network) under our names, checked entry by entry.

    Raises ValueError naming the first unknown key, the first missing key (``strict``), a key given under both
    names, or a key whose shape differs (with both shapes).
    """
    to_ours = reference_key_map(module)
    from_theirs = {theirs: ours for ours, theirs in to_ours.items()}
    expected = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    given_as: dict[str, str] = {}
    for key, value in state_dict.items():
        ours = key if key in expected else from_theirs.get(key)
        if ours is None:
            if strict:
                raise ValueError(f"state_dict has an unexpected key {key!r}: neither this {module.operator_name} "
                                 f"upsampler's name nor the authors' name of one of its entries")
            continue
        if ours in mapped:
            raise ValueError(f"state_dict holds the entry {ours!r} twice: as {given_as[ours]!r} and as {key!r}")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict[{key!r}] must be a tensor, got {type(value).__name__}")
        if tuple(value.shape) != tuple(expected[ours].shape):
            raise ValueError(f"state_dict[{key!r}] has shape {tuple(value.shape)}, this upsampler expects "
                             f"{tuple(expected[ours].shape)} (dim={module.dim})")
        mapped[ours] = value
        given_as[ours] = key
    if strict:
        authors_names = bool(given_as) and all(k != v for v, k in given_as.items())
        for ours in (to_ours if authors_names else expected):
            if ours not in mapped:
                name = to_ours[ours] if authors_names else ours
                raise ValueError(f"state_dict is missing the key {name!r} (shape {tuple(expected[ours].shape)})")
    return mapped


def rename_reference_keys(module: nn.Module, state_dict, prefix, local_metadata, strict, missing_keys,
                          unexpected_keys, error_msgs) -> None:
    """``load_state_dict`` pre-hook: entries under the authors' names are renamed to ours (exact names only;
    an entry also present under our name is left alone, so strict loading reports it as unexpected)."""
    renames = {prefix + theirs: prefix + ours for ours, theirs in reference_key_map(module).items()}
    for key in [k for k in state_dict if k in renames]:
        if renames[key] not in state_dict:
            state_dict[renames[key]] = state_dict.pop(key)
