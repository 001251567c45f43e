"""The 4× evaluation methods (wrcup.eval.extract): registered scales, output grids, and equality with what the public
API gives for the same checkpoint (``wrcup.load(...)(images, scale=4)`` and friends); fidelity's target for them."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import wrcup
from wrcup.eval import tasks
from wrcup.eval.extract import FeatureExtractor, get_method, list_methods, load_model, uses_upsampler
from wrcup.eval.fidelity import feature_fidelity
from wrcup.models.sizing import resize_features

NEW = {"bilinear-4x": False, "learned-4x": True, "learned-bilinear-4x": True}  # name → runs the upsampler


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 56, 84)  # 4×6 patches of 14


def test_new_methods_are_registered_after_the_old_with_scale_4():
    names = list_methods()
    assert names[:3] == ["none", "bilinear", "learned"]
    assert names[3:6] == list(NEW)
    for name, runs in NEW.items():
        assert get_method(name).scale == 4 and uses_upsampler(name) is runs
    assert [uses_upsampler(m) for m in ("none", "bilinear", "learned")] == [False, False, True]


def test_4x_methods_equal_the_public_api(checkpoint, images):
    model = wrcup.load(str(checkpoint))
    with torch.inference_mode():
        low = model.backbone(images)
        two = model(images)
        four = model(images, scale=4)
    expected = {
        "learned": two,
        "learned-4x": four,  # two learned passes, each guided by the image
        "learned-bilinear-4x": F.interpolate(two, scale_factor=2, mode="bilinear", align_corners=False),
        "bilinear-4x": F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False),
    }
    for method, want in expected.items():
        backbone, upsampler, meta = load_model(str(checkpoint), method)
        assert (upsampler is not None) == uses_upsampler(method) and meta["operator"] == "wrc-reference"
        got = FeatureExtractor(backbone, upsampler, method)(images)
        scale = get_method(method).scale
        assert got.shape == (2, 384, 4 * scale, 6 * scale), method
        assert torch.equal(got, want), (method, (got - want).abs().max())
    # the passes differ from one pass and a resize, and one resize differs from two bilinear doublings
    assert not torch.allclose(expected["learned-4x"], expected["learned-bilinear-4x"], atol=1e-3)
    twice = F.interpolate(F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False), scale_factor=2,
                          mode="bilinear", align_corners=False)
    assert not torch.allclose(expected["bilinear-4x"], twice, atol=1e-4)
    # learned-bilinear-4x's doubling is the model's own final resize (sizing.resize_features) up to rounding
    assert torch.allclose(expected["learned-bilinear-4x"], resize_features(two, (16, 24)), atol=1e-5)


def test_methods_that_run_the_upsampler_need_a_checkpoint(embedded_backbone):
    for method in ("learned-4x", "learned-bilinear-4x"):
        with pytest.raises(ValueError, match=f"--method {method} needs a checkpoint"):
            load_model("dinov2-s14-imgfocus", method)
        with pytest.raises(ValueError, match=f"method '{method}' needs a trained upsampler"):
            FeatureExtractor(embedded_backbone, None, method)
    backbone, upsampler, _ = load_model("dinov2-s14-imgfocus", "bilinear-4x")
    assert upsampler is None and FeatureExtractor(backbone, None, "bilinear-4x").scale == 4


def test_fidelity_target_is_four_times_the_input_for_4x_methods(embedded_backbone, real_photos):
    """The target of a 4× method is the backbone at 4× the input (the grid it predicts); ``none`` and the 2×
    methods keep the 2× target. Oracle: the same steps written out with the public functions."""
    from wrcup.data.images import load_image
    from wrcup.eval.extract import resize_to_grid

    photo = real_photos[0]
    result = tasks.run_task("fidelity", FeatureExtractor(embedded_backbone, None, "bilinear-4x"),
                            image_paths=[photo], size=28, progress=False)
    assert (result["input_size"], result["target_size"]) == (28, 112)
    image = load_image(photo)
    low_in = resize_to_grid(image, 28, 14)
    high_in = F.interpolate(image[None], size=tuple(4 * d for d in low_in.shape[-2:]), mode="bilinear",
                            antialias=True, align_corners=False).clamp(0, 1)
    pred = F.interpolate(embedded_backbone(low_in[None]), scale_factor=4, mode="bilinear", align_corners=False)
    target = embedded_backbone(high_in)
    assert pred.shape == target.shape
    assert result["cosine"] == pytest.approx(feature_fidelity(pred, target)["cosine"], rel=1e-6)
    for method in ("none", "bilinear"):
        r = tasks.run_task("fidelity", FeatureExtractor(embedded_backbone, None, method), image_paths=[photo],
                           size=28, progress=False)
        assert r["target_size"] == 56, method
