"""Helpers for the backbone tests: real photos and error measures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "imagenet-sample"
PHOTOS = ("n01440764_tench.JPEG", "n01443537_goldfish.JPEG", "n01484850_great_white_shark.JPEG")


def load_photos(height: int, width: int, count: int = len(PHOTOS)) -> torch.Tensor:
    """count real photos resized (PIL bicubic) to height×width: count×3×H×W float32 in [0, 1]."""
    from PIL import Image

    if not DATA.is_dir():
        pytest.skip(f"real photos not available: {DATA} is missing")
    images = []
    for name in PHOTOS[:count]:
        with Image.open(DATA / name) as image:
            array = np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.float32)
        images.append(torch.from_numpy(array.copy()).permute(2, 0, 1) / 255.0)
    return torch.stack(images)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm())
