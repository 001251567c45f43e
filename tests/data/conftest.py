"""Helpers that write tiny dataset fixtures (8×8 images and labels) in tmp_path, in each standard layout."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write_rgb(path: Path, array: np.ndarray | None = None, size=(8, 8), seed: int = 0) -> np.ndarray:
    """Write an RGB image (PNG is lossless; JPEG only where the layout demands it) and return its H×W×3 uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(array, "RGB").save(path)
    return array


def write_index(path: Path, array: np.ndarray, palette: bool = False) -> None:
    """Write an index label PNG: mode L, or mode P with an arbitrary colour palette (the index is the label)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8), "L")
    if palette:
        img = img.convert("P")
        img.putpalette([(i * 37) % 256 for i in range(768)])
        img.putdata(array.astype(np.uint8).flatten().tolist())
    img.save(path)


@pytest.fixture
def fx():
    return SimpleNamespace(write_rgb=write_rgb, write_index=write_index, shared_data=SHARED_DATA)
