"""Image files → tensors: listing, loading, a folder dataset and resize/crop helpers.

Every image leaves this module as a ``torch.float32`` tensor of shape 3×H×W with values in [0, 1] (RGB, EXIF
orientation applied). Label maps leave it as ``torch.int64`` tensors of shape H×W holding the raw stored indices.

How :func:`load_image` maps each PIL mode to [0, 1] (one rule per mode, no guessing from the values):

* ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, …: 8-bit levels / 255 (``1``: 0 or 1). CMYK is turned into
  RGB in floating point as (1 − c)(1 − k) per channel, without colour management.
* ``I;16``, ``I;16B``, ``I;16L`` (16-bit greyscale PNG/TIFF): / 65535, keeping all 16 bits.
* ``I`` (32-bit signed integers): Pillow uses it for 16-bit data widened to 32 bits, so values in [0, 65535]
  are divided by 65535; any value outside that range has no standard brightness scale and the file is refused
  (ImageReadError naming the range found).
* ``F`` (32-bit float): used as is when every value lies in [0, 1]; NaN/Inf or values outside [0, 1] are
  refused for the same reason (rescaling by the image's own min/max would silently change its brightness).
* Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, a ``transparency`` entry such as a PNG tRNS chunk or
  a GIF's transparent index) is composited on white: a pixel with alpha a reads as a·colour + (1 − a).
* Multi-frame files (animated GIF/WebP, multi-page TIFF) give their first frame.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "DatasetLayoutError", "ImageFolder", "ImageReadError", "center_crop", "is_image_file",
           "list_images", "load_image", "load_label", "resize_short_side"]


def check_same_size(dataset: str, image: torch.Tensor, image_path: Path, target: torch.Tensor, target_path: Path,
                    what: str) -> None:
    """ImageReadError when a 3×H×W image and its H×W ``what`` map (label, depth) differ in size."""
    if tuple(image.shape[-2:]) != tuple(target.shape):
        raise ImageReadError(f"{dataset}: image {str(image_path)!r} is {tuple(image.shape[-2:])} but {what} "
                             f"{str(target_path)!r} is {tuple(target.shape)}")

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
"""Lower-case suffixes recognised as images when folders are listed (every format :func:`load_image` is tested
on); matching is case-insensitive (``.JPEG`` counts)."""


class ImageReadError(ValueError):
    """An image or label file is missing or cannot be decoded; the message names the path."""


class DatasetLayoutError(FileNotFoundError):
    """A dataset root does not have the expected layout; the message names the root and what is missing."""

    def __init__(self, dataset: str, root: str | os.PathLike, missing: str | os.PathLike, expected: str = ""):
        self.root = Path(root)
        missing = Path(missing)
        # name the missing part relative to the root when it lies inside it
        inside = missing != self.root and missing.is_relative_to(self.root)
        self.missing = missing.relative_to(self.root) if inside else missing
        hint = f" Expected layout: {expected}" if expected else ""
        super().__init__(f"{dataset} root {str(self.root)!r}: missing {str(self.missing)!r}.{hint}")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """All image files under ``root`` (by suffix, case-insensitive), sorted by their path relative to ``root``.

    The order depends only on the file names, never on the file system, so indices are reproducible.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {str(root)!r} is not a directory")
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = [p for p in candidates if p.is_file() and is_image_file(p)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with PIL, turning every failure into :class:`ImageReadError`."""
    if not path.is_file():
        what = "a folder, not an image file" if path.is_dir() else "no such file"
        raise ImageReadError(f"cannot read {str(path)!r}: {what}")
    try:
        img = Image.open(path)
        img.load()  # PIL decodes lazily; force it here so truncated files fail inside this try
    except Image.DecompressionBombError as err:  # not an OSError: PIL's guard against huge images
        raise ImageReadError(f"cannot read {str(path)!r}: too many pixels for PIL's safety limit ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read {str(path)!r}: {err}") from err
    return img


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as RGB (any mode PIL opens; the per-mode scaling is in the module docstring).

    Returns:
        ``torch.float32`` tensor 3×H×W in [0, 1], after applying the EXIF orientation tag.
    Raises:
        ImageReadError: the file is missing, cannot be decoded, or holds values without a known [0, 1] scale.
    """
    path = Path(path)
    img = _open(path)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a corrupt EXIF block should not make a readable image unreadable
        pass
    array = _rgb_float(img, path)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _rgb_float(img: Image.Image, path: Path) -> np.ndarray:
    """A decoded PIL image → float32 H×W×3 in [0, 1] (rules in the module docstring)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(img).astype(np.float32)
        grey /= 65535
    elif mode == "I":
        values = np.asarray(img)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            raise ImageReadError(f"cannot read {str(path)!r}: 32-bit integer image with values from {lo} to {hi}; "
                                 "only 0 … 65535 (16-bit data) has a known brightness scale; convert it to 8 or "
                                 "16 bits first")
        grey = values.astype(np.float32)
        grey /= 65535
    elif mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise ImageReadError(f"cannot read {str(path)!r}: float image contains NaN or Inf values")
        lo, hi = float(grey.min()), float(grey.max())
        if lo < 0 or hi > 1:
            raise ImageReadError(f"cannot read {str(path)!r}: float image with values from {lo:g} to {hi:g}; "
                                 "expected [0, 1] (other ranges have no known brightness scale; rescale it first)")
    elif mode == "1":
        grey = np.asarray(img, dtype=np.float32)
    elif mode == "CMYK":
        cmyk = np.asarray(img, dtype=np.float32)
        cmyk /= 255
        return (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:])
    else:
        alpha = mode in _ALPHA_MODES or "transparency" in img.info
        try:
            converted = img.convert("RGBA" if alpha else "RGB")
        except ValueError as err:
            raise ImageReadError(f"cannot read {str(path)!r}: PIL mode {mode!r} cannot be turned into RGB ({err})")
        array = np.asarray(converted, dtype=np.float32)
        del converted
        array /= 255  # in place, here and above: one float copy of a large photo, not two (144 MB each at 12 MP)
        if not alpha:
            return array
        a = array[..., 3:]
        return array[..., :3] * a + (1 - a)  # composite on white
    return np.repeat(grey[..., None], 3, axis=2)


def load_label(path: str | os.PathLike) -> torch.Tensor:
    """Read a label map stored as an index image (palette ``P``, greyscale ``L``, or 16/32-bit integer PNG).

    The stored indices are returned unchanged (for palette PNGs the palette index, never the colour).

    Returns:
        ``torch.int64`` tensor H×W.
    Raises:
        ImageReadError: missing/undecodable file, or a colour (RGB) image where indices were expected.
    """
    path = Path(path)
    img = _open(path)
    if img.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise ImageReadError(
            f"label file {str(path)!r} has PIL mode {img.mode!r}; expected an index image (P, L or 16-bit)"
        )
    array = np.asarray(img).astype(np.int64)
    return torch.from_numpy(array)


class ImageFolder(torch.utils.data.Dataset):
    """Every image under a folder (recursively by default), skipping files that cannot be read.

    Files whose header cannot be parsed are found when the dataset is built; they are listed in ``skipped``
    (``(path, reason)`` pairs) and summarised in one warning. A file that passes that check but fails to decode
    later is added to ``skipped`` as well, warned about once per dataset, and replaced by the next readable image.

    Items: ``{"image": float32 3×H×W in [0, 1] (after ``transform``), "path": Path}``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        recursive: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.root = Path(root)
        self.transform = transform
        self.skipped: list[tuple[Path, str]] = []
        self.paths: list[Path] = []
        for path in list_images(self.root, recursive=recursive):
            reason = _header_problem(path)
            if reason is None:
                self.paths.append(path)
            else:
                self.skipped.append((path, reason))
        self._warned_lazy = False
        if self.skipped:
            shown = ", ".join(p.name for p, _ in self.skipped[:5])
            more = "" if len(self.skipped) <= 5 else f" and {len(self.skipped) - 5} more"
            warnings.warn(
                f"ImageFolder({str(self.root)!r}): skipped {len(self.skipped)} unreadable file(s): {shown}{more}",
                RuntimeWarning,
                stacklevel=2,
            )
        if not self.paths:
            raise ValueError(
                f"ImageFolder: no readable images under {str(self.root)!r} "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)}, case-insensitive)"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        n = len(self.paths)
        for step in range(n):
            path = self.paths[(index + step) % n]
            try:
                image = load_image(path)
            except ImageReadError as err:
                if all(p != path for p, _ in self.skipped):
                    self.skipped.append((path, str(err)))
                if not self._warned_lazy:
                    self._warned_lazy = True
                    warnings.warn(f"ImageFolder: {err}; using the next readable image", RuntimeWarning, stacklevel=2)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return {"image": image, "path": path}
        raise ImageReadError(f"ImageFolder({str(self.root)!r}): no image could be decoded")


def _header_problem(path: Path) -> str | None:
    """None when PIL recognises the file and its structure checks out, else the reason."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types for damaged files; each one means "skip"
        return f"{type(err).__name__}: {err}"
    return None


# --------------------------------------------------------------------------------------- tensor geometry
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def resize_short_side(
    image: torch.Tensor, size: int, interpolation: str = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """Resize so that the shorter side equals ``size``, keeping the aspect ratio (long side rounded).

    Args:
        image: (C, H, W) or (B, C, H, W); floating, or integer (labels) with a nearest mode.
        size: target length of the shorter side.
        interpolation: ``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic`` or ``area``.
        antialias: low-pass before downsampling (bilinear/bicubic only).
    Returns:
        Same rank and dtype as ``image``.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim not in (3, 4):
        raise ValueError(f"image must have shape (C, H, W) or (B, C, H, W), got {tuple(image.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    h, w = image.shape[-2:]
    if h <= w:
        out = (size, max(1, round(w * size / h)))
    else:
        out = (max(1, round(h * size / w)), size)
    return _resize(image, out, interpolation, antialias)


def _resize(image: torch.Tensor, out: tuple[int, int], interpolation: str, antialias: bool) -> torch.Tensor:
    if tuple(image.shape[-2:]) == out:
        return image.clone()
    batched = image if image.ndim == 4 else image.unsqueeze(0)
    integer = not torch.is_floating_point(image)
    if integer and not interpolation.startswith("nearest"):
        raise ValueError(f"integer (label) images need a nearest interpolation, got {interpolation!r}")
    work = batched.double() if integer else batched  # float64 holds any label value exactly
    kwargs = {}
    if interpolation in ("bilinear", "bicubic"):
        kwargs = {"align_corners": False, "antialias": antialias}
    resized = F.interpolate(work, size=out, mode=interpolation, **kwargs)
    if integer:
        resized = resized.to(image.dtype)
    return resized if image.ndim == 4 else resized.squeeze(0)


def center_crop(image: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Crop the central ``size`` (int for a square, or (h, w)) from a (..., H, W) tensor.

    The offset is ``round((H − h) / 2)`` as in torchvision. Raises ValueError if the crop exceeds the image.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (..., H, W), got {tuple(image.shape)}")
    if isinstance(size, int) and not isinstance(size, bool):
        ch, cw = size, size
    else:
        try:
            ch, cw = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or a pair (h, w), got {size!r}") from None
    h, w = image.shape[-2:]
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f"crop size ({ch}, {cw}) must be positive and fit inside the image ({h}, {w})")
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return image[..., top : top + ch, left : left + cw]
