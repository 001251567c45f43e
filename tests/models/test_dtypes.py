"""Input dtypes, value range, eval mode and autocast of the loaded model and the upsampler network."""
from __future__ import annotations

import copy

import pytest
import torch

import wrcup
from wrcup.models import StackedUpsampler, build_upsampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    return wrcup.load()


@pytest.fixture(scope="module")
def images(real_photos):
    from wrcup.data.images import load_image

    return torch.stack([torch.nn.functional.interpolate(load_image(p)[None], size=(56, 70), mode="bilinear",
                                                        antialias=True)[0].clamp(0, 1) for p in real_photos[:2]])


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def test_loaded_model_is_in_eval_mode(shipped):
    assert shipped.training is False
    assert not any(m.training for m in shipped.modules())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_model_accepts_other_float_dtypes_and_returns_them(shipped, images, dtype):
    x = images.to(dtype)
    with torch.inference_mode():
        high, low = shipped(x, return_low_res=True)
        # computed in the model's float32 from the same (rounded) input, then cast
        ref_high, ref_low = shipped(x.float(), return_low_res=True)
    assert high.dtype == dtype and low.dtype == dtype
    assert high.shape == (2, 384, 8, 10) and low.shape == (2, 384, 4, 5)
    torch.testing.assert_close(high, ref_high.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(low, ref_low.to(dtype), rtol=0, atol=0)


def test_float64_model_computes_in_float64(shipped, images):
    double = copy.deepcopy(shipped).double()
    with torch.inference_mode():
        got = double(images.double())
        want = shipped(images)
    assert got.dtype == torch.float64
    assert _rel(got, want) < 1e-4  # float32 rounding of the reference only


@pytest.mark.parametrize("scale", [255.0, 2.0])
def test_images_outside_unit_range_are_a_clear_error(shipped, images, scale):
    with pytest.raises(ValueError, match=r"images must hold values in \[0, 1\].*divide 0–255"):
        shipped(images * scale)
    with pytest.raises(ValueError, match=r"images must hold values in \[0, 1\]"):
        shipped(images - 1.0)
    with pytest.raises(ValueError, match=r"images must hold values in \[0, 1\]"):
        shipped.backbone(images * scale)


def test_small_resampling_overshoot_is_accepted(shipped, images):
    x = images.clone()
    x[0, 0, 0, 0], x[1, 2, 3, 4] = 1.03, -0.03  # e.g. bicubic resizing of a [0, 1] photo
    with torch.inference_mode():
        assert torch.isfinite(shipped(x)).all()


def test_autocast_bfloat16_inference(shipped, images):
    with torch.inference_mode():
        want = shipped(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = shipped(images)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert _rel(got, want) < 0.05  # bfloat16 keeps 8 bits of mantissa through two networks


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_upsampler_accepts_other_float_dtypes(dtype):
    torch.manual_seed(0)
    up = build_upsampler("wrc-reference", 16, 14).eval()
    g = torch.Generator().manual_seed(1)
    image, features = torch.randn(2, 3, 56, 42, generator=g), torch.randn(2, 16, 4, 3, generator=g)
    with torch.no_grad():
        out = up(image.to(dtype), features.to(dtype))
        ref = up(image.to(dtype).float(), features.to(dtype).float())
        stacked = StackedUpsampler([up, up])(image.to(dtype), features.to(dtype))
    assert out.dtype == dtype and stacked.dtype == dtype and stacked.shape == (2, 16, 16, 12)
    torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=0)


def test_autocast_bfloat16_training_step():
    torch.manual_seed(0)
    up = build_upsampler("wrc-reference", 16, 14).train()
    g = torch.Generator().manual_seed(2)
    image, features = torch.randn(2, 3, 56, 42, generator=g), torch.randn(2, 16, 4, 3, generator=g)
    target = torch.randn(2, 16, 8, 6, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = up(image, features)
        loss = torch.nn.functional.mse_loss(pred.float(), target)
    loss.backward()
    assert pred.shape == target.shape and torch.isfinite(loss)
    grads = {n: p.grad for n, p in up.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["operator.weight"].abs().sum() > 0 and grads["operator.w_conv_high.weight"].abs().sum() > 0
