"""Monocular depth reader (NYUv2 in a simple exported layout)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .registry import register_dataset
from .images import IMAGE_EXTENSIONS, DatasetLayoutError, ImageReadError, check_same_size, load_image, load_label

_LAYOUT = "<root>/<split>/rgb/<name>.png|jpg and <root>/<split>/depth/<name>.png (uint16 mm) or <name>.npy (metres)"


class NYUv2DepthDataset(torch.utils.data.Dataset):
    """NYU Depth v2 exported as files (the labelled .mat is not read directly).

    Layout::

        <root>/<split>/rgb/<name>.png|jpg
        <root>/<split>/depth/<name>.png      # 16-bit PNG, depth in millimetres (0 = missing), or
        <root>/<split>/depth/<name>.npy      # float array, depth in metres (0 or non-finite = missing)

    Items: ``{"image": float32 3×H×W, "depth": float32 H×W in metres, "valid": bool H×W (finite and > 0),
    "name", "image_path", "depth_path"}``, optionally through ``transform(sample) -> sample``.
    """

    name = "NYUv2"

    def __init__(self, root: str | os.PathLike, split: str = "test", transform: Callable | None = None):
        self.root, self.split, self.transform = Path(root), split, transform
        rgb_dir, depth_dir = self.root / split / "rgb", self.root / split / "depth"
        for folder in (rgb_dir, depth_dir):
            if not folder.is_dir():
                raise DatasetLayoutError(self.name, self.root, folder if self.root.is_dir() else self.root, _LAYOUT)
        images = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise DatasetLayoutError(self.name, self.root, rgb_dir / "*.png", _LAYOUT)
        self.samples: list[tuple[Path, Path]] = []
        for img in images:
            candidates = [depth_dir / f"{img.stem}.png", depth_dir / f"{img.stem}.npy"]
            depth = next((c for c in candidates if c.is_file()), None)
            if depth is None:
                raise DatasetLayoutError(self.name, self.root, f"{split}/depth/{img.stem}.png|npy", _LAYOUT)
            self.samples.append((img, depth))

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def load_depth(path: str | os.PathLike) -> torch.Tensor:
        """Depth in metres, float32 H×W (missing values stay 0 or non-finite)."""
        path = Path(path)
        if path.suffix == ".npy":
            try:
                array = np.load(path)
            except (OSError, ValueError) as err:
                raise ImageReadError(f"cannot read depth {str(path)!r}: {err}") from err
            array = np.squeeze(array)
            if array.ndim != 2:
                raise ImageReadError(f"depth {str(path)!r} must hold an H×W array, got shape {array.shape}")
            return torch.from_numpy(array.astype(np.float32))
        return load_label(path).float().div_(1000.0)  # millimetres → metres

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path = self.samples[index]
        image = load_image(image_path)
        depth = self.load_depth(depth_path)
        check_same_size("NYUv2", image, image_path, depth, depth_path, "depth")
        sample = {
            "image": image,
            "depth": depth,
            "valid": torch.isfinite(depth) & (depth > 0),
            "name": image_path.stem,
            "image_path": image_path,
            "depth_path": depth_path,
        }
        return self.transform(sample) if self.transform is not None else sample


__all__ = ["NYUv2DepthDataset"]


register_dataset("depth", "nyuv2", NYUv2DepthDataset, splits=("train", "test"), help="NYUv2 (rgb/ and depth/ per split)")
