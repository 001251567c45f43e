"""wrcup.train.augment: reproducible photometric augmentations and aligned crop boxes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wrcup.train.augment import PhotometricConfig, photometric_augment, random_aligned_crops

OFF = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, jpeg_p=0.0, noise_p=0.0)
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "imagenet-sample"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def real_or_random_images() -> torch.Tensor:
    """Two 64×80 photos from the shared ImageNet sample when present (JPEG/blur behave differently on noise)."""
    files = sorted(DATA.glob("*.JPEG"))[:2] if DATA.is_dir() else []
    if len(files) < 2:
        return torch.rand(2, 3, 64, 80, generator=gen(99))
    import numpy as np
    from PIL import Image
    from torchvision.transforms.v2.functional import center_crop, resize

    imgs = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1) for f in files]
    return torch.stack([center_crop(resize(im, [64]), [64, 80]) for im in imgs]).float() / 255


@pytest.fixture(scope="module")
def images():
    return real_or_random_images()


def test_same_seed_same_output_and_shape_range(images):
    a = photometric_augment(images, gen(0))
    b = photometric_augment(images, gen(0))
    c = photometric_augment(images, gen(1))
    assert a.shape == images.shape and a.dtype == images.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_every_augmentation_on_at_once_changes_the_image_but_keeps_its_layout(images):
    cfg = PhotometricConfig(jitter_p=1.0, grayscale_p=0.0, blur_p=1.0, jpeg_p=1.0, noise_p=1.0)
    out = photometric_augment(images, gen(2), cfg)
    assert float((out - images).abs().mean()) > 1e-3
    # still the same picture: strongly correlated with the input per image
    for x, y in zip(images, out):
        corr = torch.corrcoef(torch.stack([x.mean(0).flatten(), y.mean(0).flatten()]))[0, 1]
        assert float(corr) > 0.5


def test_all_probabilities_zero_is_the_identity(images):
    torch.testing.assert_close(photometric_augment(images, gen(3), PhotometricConfig(**OFF)), images,
                               rtol=0, atol=0)


def test_grayscale_makes_channels_equal(images):
    out = photometric_augment(images, gen(4), PhotometricConfig(**{**OFF, "grayscale_p": 1.0}))
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], rtol=0, atol=0)
    # ITU-R 601 luma of the input
    luma = 0.2989 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    torch.testing.assert_close(out[:, 0], luma, rtol=0, atol=1e-3)


def test_jpeg_alone_is_a_small_perturbation_on_the_255_grid(images):
    out = photometric_augment(images, gen(5), PhotometricConfig(**{**OFF, "jpeg_p": 1.0}))
    assert 0 < float((out - images).abs().mean()) < 0.06
    torch.testing.assert_close(out * 255, (out * 255).round(), rtol=0, atol=1e-4)


def test_noise_alone_has_the_drawn_scale(images):
    cfg = PhotometricConfig(**{**OFF, "noise_p": 1.0, "noise_std": (0.02, 0.02)})
    mid = torch.full_like(images, 0.5)  # far from the clamp
    diff = photometric_augment(mid, gen(6), cfg) - mid
    assert float(diff.std()) == pytest.approx(0.02, rel=0.05)
    assert abs(float(diff.mean())) < 0.002


def test_dtype_is_kept_and_bad_inputs_raise(images):
    out = photometric_augment(images.double(), gen(7))
    assert out.dtype == torch.float64
    with pytest.raises(ValueError, match="images must be B×3×H×W"):
        photometric_augment(images[:, :1], gen(7))
    with pytest.raises(TypeError, match="generator must be a CPU torch.Generator"):
        photometric_augment(images, 7)
    with pytest.raises(ValueError, match="blur_p must be a probability"):
        PhotometricConfig(blur_p=1.5)


def test_aligned_crops_are_reproducible_aligned_and_inside():
    boxes = random_aligned_crops(gen(8), image_size=448, crop=224, align=28, n=200)
    assert boxes.shape == (200, 2) and boxes.dtype == torch.int64
    assert bool((boxes % 28 == 0).all()) and int(boxes.min()) >= 0 and int(boxes.max()) <= 224
    assert set(boxes.flatten().tolist()) == set(range(0, 225, 28))  # all 9 positions occur
    torch.testing.assert_close(random_aligned_crops(gen(8), n=200), boxes, rtol=0, atol=0)
    assert random_aligned_crops(gen(8)).shape == (4, 2)
    with pytest.raises(ValueError, match="multiples of align"):
        random_aligned_crops(gen(0), image_size=448, crop=200, align=28)
    with pytest.raises(ValueError, match="crop must be <= image_size"):
        random_aligned_crops(gen(0), image_size=224, crop=448, align=28)
