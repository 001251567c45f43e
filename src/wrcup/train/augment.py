"""Photometric augmentations of the guidance image and aligned crop boxes (recipe: docs/DESIGN.md).

Every random choice is drawn from a caller-supplied CPU ``torch.Generator``: the same generator state gives the
same augmentation on any device. Geometry is never changed (the consistency loss compares predictions on the
same grid), only colours, sharpness, compression and noise.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
import torchvision.transforms.v2.functional as TF

from .._checks import check_positive_int, check_tensor

__all__ = ["PhotometricConfig", "photometric_augment", "random_aligned_crops"]


@dataclass(frozen=True)
class PhotometricConfig:
    """Probabilities and ranges of the augmentations (SimCLR/DINO-like defaults).

    Colour jitter (probability ``jitter_p``, the four adjustments in a random order): brightness, contrast and
    saturation factors uniform in [1 − a, 1 + a], hue shift uniform in [−hue, hue] (fraction of a turn).
    Grayscale with ``grayscale_p``. Gaussian blur with ``blur_p``, σ uniform in ``blur_sigma`` pixels (kernel
    2⌈3σ⌉ + 1). JPEG re-encoding with ``jpeg_p``, integer quality uniform in ``jpeg_quality``. Additive
    Gaussian noise with ``noise_p``, standard deviation uniform in ``noise_std``. Results are clamped to [0, 1].
    """

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    noise_p: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.05)

    def __post_init__(self):
        for name in ("jitter_p", "grayscale_p", "blur_p", "jpeg_p", "noise_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"blur_sigma must be (low, high) with 0 < low <= high, got {self.blur_sigma}")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality must be (low, high) with 1 <= low <= high <= 100, got {self.jpeg_quality}")
        lo, hi = self.noise_std
        if not 0 <= lo <= hi:
            raise ValueError(f"noise_std must be (low, high) with 0 <= low <= high, got {self.noise_std}")


DEFAULT_PHOTOMETRIC = PhotometricConfig()


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """3×H×W float [0, 1] → the same after 8-bit quantisation and JPEG encoding at ``quality`` (Pillow;
    torchvision's JPEG codec is deprecated)."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(device=image.device, dtype=torch.float32) / 255


def _augment_one(image: torch.Tensor, generator: torch.Generator, cfg: PhotometricConfig) -> torch.Tensor:
    """image: 3×H×W float32 in [0, 1] (any device) → the same, augmented."""
    # A fixed number of draws per image for the decisions and parameters, so that the stream stays aligned.
    coins = torch.rand(5, generator=generator).tolist()
    order = torch.randperm(4, generator=generator).tolist()
    factors = [_uniform(generator, 1 - cfg.brightness, 1 + cfg.brightness),
               _uniform(generator, 1 - cfg.contrast, 1 + cfg.contrast),
               _uniform(generator, 1 - cfg.saturation, 1 + cfg.saturation),
               _uniform(generator, -cfg.hue, cfg.hue)]
    sigma = _uniform(generator, *cfg.blur_sigma)
    quality = int(torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (), generator=generator))
    noise_std = _uniform(generator, *cfg.noise_std)

    x = image
    if coins[0] < cfg.jitter_p:
        adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in order:
            x = adjust[k](x, factors[k])
    if coins[1] < cfg.grayscale_p:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if coins[2] < cfg.blur_p:
        H, W = x.shape[-2:]
        size = 2 * math.ceil(3 * sigma) + 1
        size = min(size, (min(H, W) - 1) // 2 * 2 + 1)  # odd and no larger than the image
        if size >= 3:
            x = TF.gaussian_blur(x, kernel_size=[size, size], sigma=[sigma, sigma])
    if coins[3] < cfg.jpeg_p:
        x = _jpeg_roundtrip(x, quality)
    if coins[4] < cfg.noise_p and noise_std > 0:
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = x + noise_std * noise
    return x.clamp(0, 1)


def photometric_augment(images: torch.Tensor, generator: torch.Generator,
                        config: PhotometricConfig = DEFAULT_PHOTOMETRIC) -> torch.Tensor:
    """Independently augment each image of a batch. Deterministic given the generator's state.

    Args:
        images: B×3×H×W float in [0, 1] (any device).
        generator: a CPU torch.Generator, advanced by the call.
        config: probabilities and ranges, :class:`PhotometricConfig`.
    Returns:
        B×3×H×W in [0, 1], dtype and device of ``images``. Gradients do not flow through the augmentation.
    """
    check_tensor(images, "images", 4)
    if images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W RGB, got shape {tuple(images.shape)}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator must be a CPU torch.Generator, got {generator!r}")
    if not isinstance(config, PhotometricConfig):
        raise TypeError(f"config must be a PhotometricConfig, got {type(config).__name__}")
    with torch.no_grad():
        out = [_augment_one(img.float(), generator, config) for img in images]
    return torch.stack(out).to(images.dtype)


def random_aligned_crops(generator: torch.Generator, image_size: int = 448, crop: int = 224, align: int = 28,
                         n: int = 4) -> torch.Tensor:
    """n random square crop boxes (top, left) in pixels, multiples of ``align``, fully inside the image.

    Returns int64 n×2. Each coordinate is uniform over {0, align, …, image_size − crop}. Divide by the patch
    size for the high-res token units of :func:`wrcup.train.losses.local_crop_loss`.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_positive_int(image_size, "image_size")
    check_positive_int(crop, "crop")
    check_positive_int(align, "align")
    check_positive_int(n, "n", minimum=0)
    if crop > image_size:
        raise ValueError(f"crop must be <= image_size, got crop={crop}, image_size={image_size}")
    if crop % align or image_size % align:
        raise ValueError(f"crop ({crop}) and image_size ({image_size}) must be multiples of align ({align})")
    positions = (image_size - crop) // align + 1
    return torch.randint(0, positions, (n, 2), generator=generator, device=generator.device) * align
