"""wrcup.models.output_norm: match_norm against a float64 transcription, gradcheck; output_norm="bilinear" on the
network, its passes, its tiles, wrcup.load and the evaluation methods."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import wrcup
from wrcup.data.images import load_image, resize_short_side
from wrcup.models import StackedUpsampler, WRCUpsampler, build_upsampler, match_norm
from wrcup.models.tiling import tiled_pass


def _oracle(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Pixel by pixel, in float64: features · ‖reference‖ / ‖features‖ (zero vectors left alone)."""
    out = features.double().clone()
    B, C, H, W = features.shape
    for b in range(B):
        for i in range(H):
            for j in range(W):
                f, r = features[b, :, i, j].double(), reference[b, :, i, j].double()
                n = float(f.pow(2).sum().sqrt())
                if n > 1e-6:
                    out[b, :, i, j] = f * float(r.pow(2).sum().sqrt()) / n
    return out


def test_match_norm_equals_a_per_pixel_transcription_and_keeps_zero_pixels():
    g = torch.Generator().manual_seed(0)
    features, reference = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g) * 3
    features[1, :, 2, 3] = 0
    out = match_norm(features, reference)
    torch.testing.assert_close(out.double(), _oracle(features, reference), rtol=1e-6, atol=1e-6)
    assert torch.equal(out[1, :, 2, 3], torch.zeros(5))
    cos = F.cosine_similarity(out, features, dim=1)
    assert float(cos.flatten()[:-1].min()) > 1 - 1e-6  # directions unchanged (the zero pixel has none)


def test_match_norm_gradcheck_and_shape_error():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(1, 4, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(1, 4, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(match_norm, (f, r))
    with pytest.raises(ValueError, match="same shape"):
        match_norm(torch.zeros(1, 4, 2, 3), torch.zeros(1, 4, 2, 2))


def _pair(operator="wrc-aligned", residual=True):
    torch.manual_seed(0)
    learned = WRCUpsampler(16, 14, operator=operator, residual=residual).eval()
    normed = WRCUpsampler(16, 14, operator=operator, residual=residual, output_norm="bilinear").eval()
    normed.load_state_dict(learned.state_dict())
    return learned, normed


@pytest.mark.parametrize("residual", [True, False])
def test_the_bilinear_norm_rescales_each_output_pixel_of_the_network(residual):
    learned, normed = _pair(residual=residual)
    g = torch.Generator().manual_seed(2)
    image, feats = torch.randn(2, 3, 42, 56, generator=g), torch.randn(2, 16, 3, 4, generator=g)
    with torch.no_grad():
        raw, out = learned(image, feats), normed(image, feats)
    bilinear = F.interpolate(feats, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.double(), _oracle(raw, bilinear), rtol=1e-5, atol=1e-5)
    assert "output_norm='bilinear'" in repr(normed) and "output_norm" not in repr(learned)  # cache keys kept


def test_every_pass_of_a_stack_takes_the_norm_of_its_own_input():
    learned, normed = _pair()
    g = torch.Generator().manual_seed(3)
    image, feats = torch.randn(1, 3, 42, 56, generator=g), torch.randn(1, 16, 3, 4, generator=g)
    with torch.no_grad():
        quarter = learned.image_branch.quarter_map(image)
        first = learned.upsample_features(feats, quarter, 14.0)
        first = match_norm(first, F.interpolate(feats, scale_factor=2, mode="bilinear", align_corners=False))
        second = learned.upsample_features(first, quarter, 7.0)
        second = match_norm(second, F.interpolate(first, scale_factor=2, mode="bilinear", align_corners=False))
        stacked = StackedUpsampler([normed, normed])(image, feats)
    torch.testing.assert_close(stacked, second, rtol=1e-5, atol=1e-5)


def test_bad_output_norm_values_are_refused():
    with pytest.raises(ValueError, match="output_norm must be one of 'learned', 'bilinear'; got 'l2'"):
        WRCUpsampler(16, 14, output_norm="l2")
    with pytest.raises(ValueError, match="output_norm='bilinear' has no meaning for the unguided 'bilinear'"):
        build_upsampler("bilinear", 16, 14, output_norm="bilinear")


@pytest.fixture(scope="module")
def models():
    return wrcup.load(), wrcup.load(output_norm="bilinear")


def test_load_overrides_the_checkpoints_output_norm_and_records_it(models, tmp_path):
    plain, normed = models
    assert plain.upsampler.output_norm == "learned" and plain.metadata["output_norm"] == "learned"
    assert normed.upsampler.output_norm == "bilinear" and normed.metadata["output_norm"] == "bilinear"
    with pytest.raises(ValueError, match="output_norm must be one of"):
        wrcup.load(output_norm="unit")


def test_on_a_real_photo_the_norm_changes_lengths_not_directions_also_on_tiles(models, real_photos):
    plain, normed = models
    x = plain.backbone.prepare(resize_short_side(load_image(real_photos[0])[None], 224).clamp(0, 1))
    with torch.inference_mode():
        low = plain.backbone(x)
        a, b = plain(x), normed(x)
        image = normed.backbone.normalise(x)
        quarter = normed.upsampler.image_branch.quarter_map(image)
        untiled = normed.upsampler.upsample_features(low, quarter, 14.0)
        tiled = tiled_pass(normed.upsampler, low, quarter, 14.0, tile=8, overlap=4)
    assert float(F.cosine_similarity(a, b, dim=1).min()) > 1 - 1e-5
    bilinear = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(b.norm(dim=1), bilinear.norm(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(untiled, b, rtol=1e-5, atol=1e-5)
    # tiles: each tile's directions blend at the seams, its lengths come from the whole grid's bilinear
    assert float(F.cosine_similarity(tiled, untiled, dim=1).mean()) >= 0.995
    ratio = tiled.norm(dim=1) / untiled.norm(dim=1)
    assert float(ratio.min()) > 0.98 and float(ratio.max()) <= 1 + 1e-5  # blending vectors can only shorten


def test_the_evaluation_methods_equal_the_models_output(models, real_photos):
    from wrcup.eval.extract import FeatureExtractor

    plain, normed = models
    x = plain.backbone.prepare(resize_short_side(load_image(real_photos[1])[None], 112).clamp(0, 1))
    two = FeatureExtractor(plain.backbone, plain.upsampler, "learned-bilinear-norm")
    four = FeatureExtractor(plain.backbone, plain.upsampler, "learned-bilinear-norm-4x")
    with torch.inference_mode():
        torch.testing.assert_close(two(x), normed(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(four(x), normed(x, scale=4), rtol=1e-5, atol=1e-5)
    assert plain.upsampler.output_norm == "learned"  # the method did not change the model it was given


def test_the_normed_upsampler_exports_to_onnx(models, tmp_path):
    from wrcup.models.export import check_onnx, export_onnx

    _, normed = models
    path = export_onnx(normed, tmp_path / "normed.onnx", upsampler_only=True)
    assert check_onnx(path, normed, upsampler_only=True) <= 1e-4
