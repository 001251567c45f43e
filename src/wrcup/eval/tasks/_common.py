"""What the task runners share: task options (declared once, as dataclass fields), thinning, seeding, sizes,
and the probe views and feature sets."""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, field

import torch
import torch.nn.functional as F

from ..._checks import check_choice, check_positive_int


def option(default=MISSING, *, help: str, choices=None, flag: str | None = None, positional: bool = False):
    """A task option: a dataclass field whose metadata carries what the command line shows (help text, choices,
    the flag's name when it differs from the field's, positional on ``wrcup eval TASK``). No default: required.

    ``choices``: a sequence, or a function returning one, called each time the choices are needed (e.g.
    ``lambda: list_datasets("segmentation")``, so a reader registered later is offered too)."""
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    metadata = {"help": help, "choices": choices, "flag": flag, "positional": positional}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def option_choices(f) -> tuple | None:
    """The choices of option field ``f`` now (None: any value)."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


class TaskOptions:
    """Base of the options dataclasses: checks every option that has choices on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = option_choices(f)
            if choices is not None:
                check_choice(getattr(self, f.name), f.name, choices)

    def resolved(self):
        """The options as run and recorded (e.g. folders expanded into files); default: unchanged."""
        return self

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def subsample(items: list, max_items: int | None) -> list:
    """At most ``max_items`` items spread evenly over the list (first one included); deterministic."""
    if max_items is None or max_items >= len(items):
        return list(items)
    if max_items < 1:
        raise ValueError(f"max_images must be a positive int, got {max_items!r}")
    return [items[(i * len(items)) // max_items] for i in range(max_items)]


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def check_size(size, name: str = "size") -> int:
    return check_positive_int(size, name)


def snap_to_patch(size: int, patch: int) -> int:
    """``size`` rounded to the nearest multiple of the patch (at least one patch)."""
    return max(patch, round(size / patch) * patch)


def center_square(image: torch.Tensor, target: torch.Tensor | None = None):
    """Crop 3×H×W (and an H×W target) to the central min(H, W) square."""
    H, W = image.shape[-2:]
    s = min(H, W)
    top, left = (H - s) // 2, (W - s) // 2
    image = image[..., top:top + s, left:left + s]
    return image, (None if target is None else target[..., top:top + s, left:left + s])


def train_view(image: torch.Tensor, target: torch.Tensor, size: int, nearest_dtype=None):
    """Training view of a probe sample: the central square, image resized to ``size``×``size`` (antialiased
    bilinear), target to the same size by nearest neighbour (labels and depth must not be blended)."""
    image, target = center_square(image, target)
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp(0, 1)
    target = F.interpolate(target[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return image, target.to(nearest_dtype or target.dtype)


class FeatureTargetSet(torch.utils.data.Dataset):
    """(features C×h×w float16 → float32, target H×W) pairs held in RAM for probe training."""

    def __init__(self, target_dtype: torch.dtype):
        self.features: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.target_dtype = target_dtype

    def add(self, features: torch.Tensor, target: torch.Tensor) -> None:
        self.features.append(features.detach().to("cpu", torch.float16))
        self.targets.append(target.cpu().to(torch.uint8) if self.target_dtype == torch.int64 else target.cpu().float())

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int):
        return self.features[index].float(), self.targets[index].to(self.target_dtype)
