"""wrcup.models.to_image: chunk plans, the .npy stream against a float64 oracle, write errors."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wrcup
from wrcup.data.images import load_image, resize_short_side
from wrcup.models.tiling import learned_grid, learned_passes_to_guidance
from wrcup.models.to_image import npy_header, plan_chunks, write_features_npy


@pytest.mark.parametrize("shape, chunk_bytes", [((384, 30, 40), 64 * 2**20), ((7, 30, 40), 2 * 30 * 40 * 3),
                                                ((5, 30, 40), 2 * 40 * 7), ((3, 4, 5), 1), ((2, 9, 4), 2 * 4 * 9)])
def test_chunks_tile_the_file_in_order_within_the_size(shape, chunk_bytes):
    C, H, W = shape
    offsets = []
    for c0, c1, r0, r1 in plan_chunks(shape, chunk_bytes):
        assert c1 - c0 == 1 or (r0, r1) == (0, H)   # a contiguous piece of the C×H×W array
        assert (c1 - c0) * (r1 - r0) * W * 2 <= max(chunk_bytes, 2 * W)
        offsets.append(((c0 * H + r0) * W, (c0 * H + r0) * W + (c1 - c0) * (r1 - r0) * W))
    assert offsets[0][0] == 0 and offsets[-1][1] == C * H * W
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:]))


def test_npy_header_is_what_numpy_reads():
    data = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    buf = io.BytesIO(npy_header(data.shape) + data.tobytes())
    np.testing.assert_array_equal(np.load(buf), data)


@pytest.fixture(scope="module")
def shipped():
    return wrcup.load()


@pytest.fixture(scope="module")
def small_photo(shipped, real_photos):
    """A real photo at 112-pixel short side: normalised image, backbone features and the learned passes' count."""
    x = shipped.backbone.prepare(resize_short_side(load_image(real_photos[1])[None], 112).clamp(0, 1))
    with torch.inference_mode():
        features = shipped.backbone(x)
    return shipped.backbone.normalise(x), features, learned_passes_to_guidance(features.shape[-2:], x.shape[-2:])


def _write(shipped, small_photo, size, **kw):
    image, features, passes = small_photo
    buf = io.BytesIO()
    with torch.inference_mode():
        done = write_features_npy(buf, shipped.upsampler, image, features, size, learned_passes=passes, **kw)
    buf.seek(0)
    return np.load(buf), done


def test_streamed_npy_equals_a_float64_oracle_to_float16_precision_for_every_chunking(shipped, small_photo):
    """Non-multiple output size (101×135 from a 32×n learned grid), chunks of several channels, of one channel and
    of a third of one: every file is the same, and each value is the float64 bilinear growth of the learned grid
    correctly rounded to float16 (half a unit in the last place, plus float32 rounding)."""
    image, features, passes = small_photo
    size = (101, 135)
    with torch.inference_mode():
        grid = learned_grid(shipped.upsampler, image, features, size, learned_passes=passes)
    oracle = F.interpolate(grid.double(), size=size, mode="bilinear", align_corners=False)[0].numpy()
    files = {}
    for chunk_bytes in (64 * 2**20, 2 * 101 * 135, 2 * 135 * 37):
        files[chunk_bytes], done = _write(shipped, small_photo, size, chunk_bytes=chunk_bytes, figure_side=32)
        assert files[chunk_bytes].dtype == np.float16 and files[chunk_bytes].shape == (384, *size)
        np.testing.assert_array_equal(done.reduced.numpy(), files[chunk_bytes][:, ::done.k, ::done.k])
    assert done.chunks >= 3 * 384 and done.k == 5 and done.learned_grid == tuple(grid.shape[-2:])
    first = files[64 * 2**20]
    for other in files.values():
        np.testing.assert_array_equal(other, first)
    ulp = np.spacing(np.abs(oracle).astype(np.float16)).astype(np.float64)
    assert (np.abs(first.astype(np.float64) - oracle) <= 0.5 * ulp + 1e-6 * np.abs(oracle).max()).all()


def test_output_smaller_than_the_learned_grid_is_the_antialiased_shrink(shipped, small_photo):
    image, features, passes = small_photo
    size = (20, 50)   # fewer rows than the learned grid, more columns
    with torch.inference_mode():
        grid = learned_grid(shipped.upsampler, image, features, size, learned_passes=passes)
        expected = F.interpolate(grid, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    assert grid.shape[-2] > size[0]
    written, _ = _write(shipped, small_photo, size, chunk_bytes=2 * 50 * 3)
    np.testing.assert_array_equal(written, expected.half().numpy())


def test_a_failing_write_raises_its_error(shipped, small_photo):
    class Full(io.BytesIO):
        def write(self, data):
            if self.tell() > 1000:
                raise OSError(28, "No space left on device")
            return super().write(data)

    image, features, passes = small_photo
    with pytest.raises(OSError, match="No space"), torch.inference_mode():
        write_features_npy(Full(), shipped.upsampler, image, features, (60, 80), learned_passes=passes,
                           chunk_bytes=2 * 60 * 80)


def _guide_image(shipped, small_photo, size):
    """The photo in [0, 1] at the output size (what the CLI passes as the guide)."""
    image, _, _ = small_photo
    mean = torch.tensor(shipped.backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(shipped.backbone.std).view(1, 3, 1, 1)
    photo = image * std + mean
    return F.interpolate(photo.clamp(0, 1), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def test_guided_growth_equals_guided_upsample_for_every_chunking(shipped, small_photo):
    """The guided final step, chunk by chunk, against :func:`wrcup.ops.guided_upsample` of the learned grid in
    float64: float16 rounding (half a unit in the last place) plus float32 arithmetic."""
    from wrcup.ops import guided_upsample

    image, features, passes = small_photo
    size = (101, 135)
    guide = _guide_image(shipped, small_photo, size)
    with torch.inference_mode():
        grid = learned_grid(shipped.upsampler, image, features, size, learned_passes=passes)
    oracle = guided_upsample(grid.double(), guide.double()[None], size)[0].numpy()
    bilinear = F.interpolate(grid.double(), size=size, mode="bilinear", align_corners=False)[0].numpy()
    files = []
    for chunk_bytes in (64 * 2**20, 2 * 135 * 37):
        written, done = _write(shipped, small_photo, size, chunk_bytes=chunk_bytes, figure_side=32,
                               final_step="guided", guide_image=guide)
        assert written.dtype == np.float16 and written.shape == (384, *size)
        np.testing.assert_array_equal(done.reduced.numpy(), written[:, ::done.k, ::done.k])
        files.append(written)
    np.testing.assert_array_equal(files[0], files[1])
    ulp = np.spacing(np.abs(oracle).astype(np.float16)).astype(np.float64)
    err = np.abs(files[0].astype(np.float64) - oracle) - 0.5 * ulp
    assert (err <= 1e-5 * np.abs(oracle).max()).all()
    assert np.abs(oracle - bilinear).max() > 0.1 * np.abs(oracle).max()   # the guided step is not the bilinear one


@pytest.mark.parametrize("kw, match", [({"final_step": "guided"}, "needs guide_image"),
                                       ({"final_step": "guided", "guide_image": torch.rand(3, 10, 10)}, "guide_image must be"),
                                       ({"final_step": "nearest"}, "final_step")])
def test_guided_growth_arguments_are_checked(shipped, small_photo, kw, match):
    with pytest.raises(ValueError, match=match):
        _write(shipped, small_photo, (60, 80), **kw)
