"""wrcup.load: the shipped checkpoint, local files, torch.hub entry points, clear errors."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import wrcup
from wrcup.models.bundle import SHIPPED_CHECKPOINTS, checkpoint_path
from wrcup.models.checkpoint import read_metadata
from wrcup.models.names import DEFAULT_CHECKPOINT, FIRST_CHECKPOINT

REPO_HUBCONF = __import__("pathlib").Path(__file__).resolve().parents[2] / "hubconf.py"


@pytest.fixture(scope="module")
def shipped():
    return wrcup.load()


@pytest.mark.parametrize("name, operator, steps", [("wrc-dinov2-s14-imgfocus-v2", "wrc-aligned", 5000),
                                                   ("wrc-dinov2-s14-imgfocus", "wrc-reference", 1400)])
def test_shipped_checkpoints_are_packaged_and_small(name, operator, steps):
    path = checkpoint_path(name)
    assert path.stat().st_size < 20e6
    meta = read_metadata(path)
    assert meta["backbone"] == "dinov2-s14-imgfocus" and meta["operator"] == operator and meta["residual"] is True
    assert meta["dim"] == 384 and meta["patch_size"] == 14 and meta["steps"] == steps


def test_default_is_the_new_checkpoint_and_the_first_still_loads(shipped):
    assert DEFAULT_CHECKPOINT == "wrc-dinov2-s14-imgfocus-v2" and shipped.metadata["name"] == DEFAULT_CHECKPOINT
    assert set(SHIPPED_CHECKPOINTS) == {DEFAULT_CHECKPOINT, FIRST_CHECKPOINT}
    first = wrcup.load(FIRST_CHECKPOINT)
    assert first.metadata["config"]["name"] == FIRST_CHECKPOINT and first.metadata["operator"] == "wrc-reference"
    x = torch.rand(1, 3, 56, 56)
    with torch.inference_mode():
        new, old = shipped(x), first(x)
    assert new.shape == old.shape == (1, 384, 8, 8) and not torch.allclose(new, old)


def test_default_model_doubles_the_backbone_grid(shipped, real_photos):
    from wrcup.data.images import load_image

    image = torch.nn.functional.interpolate(load_image(real_photos[0])[None], size=(112, 168), mode="bilinear")
    with torch.inference_mode():
        high, low = shipped(image, return_low_res=True)
        assert torch.equal(low, shipped.backbone(image))
    assert low.shape == (1, 384, 8, 12) and high.shape == (1, 384, 16, 24)
    assert torch.isfinite(high).all()
    assert shipped.metadata["operator"] == "wrc-aligned"
    # the upsampled features stay in the backbone's feature space: close to the bilinear upsampling
    bil = torch.nn.functional.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.nn.functional.cosine_similarity(high, bil, dim=1).mean() > 0.8


def test_hub_entry_points(shipped):
    spec = importlib.util.spec_from_file_location("hubconf", REPO_HUBCONF)
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    model = hub.wrc_upsampler(str(checkpoint_path(DEFAULT_CHECKPOINT)))
    x = torch.rand(1, 3, 56, 56)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), shipped(x))
        torch.testing.assert_close(hub.wrc_dinov2_s14_imgfocus()(x), shipped(x))
    with pytest.raises(ValueError, match="pretrained"):
        hub.wrc_dinov2_s14_imgfocus(pretrained=False)


def test_unknown_name_and_bad_images_give_clear_errors(shipped, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a shipped name"):
        wrcup.load("wrc-nonexistent")
    with pytest.raises(ValueError, match="3 channels"):
        shipped(torch.rand(1, 4, 56, 56))
    with pytest.raises(ValueError, match="NaN"):
        shipped(torch.full((1, 3, 56, 56), float("nan")))


@pytest.mark.parametrize("images, error, hint", [
    (np.zeros((56, 56, 3), np.float32), TypeError, "wrcup.data.load_image"),
    (torch.zeros(1, 3, 56, 56, dtype=torch.uint8), TypeError, r"images.float\(\) / 255"),
    (torch.rand(3, 56, 56), ValueError, r"add the batch dimension: images\[None\]"),
    (torch.rand(1, 56, 56, 3), ValueError, r"channels-last: use images.permute\(0, 3, 1, 2\)"),
    (torch.rand(1, 1, 56, 56), ValueError, r"images.expand\(-1, 3, -1, -1\)"),
    (torch.rand(1, 4, 56, 56), ValueError, r"RGBA, composite the alpha channel or drop it with images\[:, :3\]"),
    (torch.rand(1, 3, 0, 56), ValueError, "must be non-empty"),
    (torch.rand(2, 3, 20, 300), ValueError, "20×300 give a 1×21 token grid .* at least 21 pixels on each side"),
])
def test_near_miss_images_get_an_error_that_says_how_to_fix_them(shipped, images, error, hint):
    with pytest.raises(error, match=hint):
        shipped(images)


def test_the_smallest_accepted_image_side_is_the_one_the_error_names(shipped):
    # circular padding of 2 cells needs a 2×2 token grid: 21 pixels round to 2 patches of 14, 20 to 1
    assert shipped.upsampler.min_grid == 2
    assert shipped(torch.rand(1, 3, 21, 21)).shape == (1, 384, 4, 4)
    with pytest.raises(ValueError, match="at least 21 pixels"):
        shipped(torch.rand(1, 3, 21, 20))


# ------------------------------------------------------------------------------ output_size / scale
def _photo(real_photos, size):
    from wrcup.data.images import load_image

    return torch.nn.functional.interpolate(load_image(real_photos[1])[None], size=size, mode="bilinear",
                                           antialias=True).clamp(0, 1)


def test_default_output_is_unchanged_and_equals_scale_2_and_the_2x_output_size(shipped, real_photos):
    image = _photo(real_photos, (100, 150))          # not multiples of 14: prepared to 98×154, grid 7×11
    with torch.inference_mode():
        prepared = shipped.backbone.prepare(image)
        low = shipped.backbone(prepared)
        today = shipped.upsampler(shipped.backbone.normalise(prepared), low)   # the one-pass path, by hand
        default, low_out = shipped(image, return_low_res=True)
        assert torch.equal(default, today) and torch.equal(low_out, low)
        assert torch.equal(shipped(image, scale=2), today)
        assert torch.equal(shipped(image, output_size=(14, 22)), today)
    assert today.shape == (1, 384, 14, 22)


def test_scales_repeat_the_trained_pass_then_resize_exactly(shipped, real_photos):
    from wrcup.models import upsample
    from wrcup.models.sizing import resize_features

    image = _photo(real_photos, (45, 70))            # grid 3×5
    with torch.inference_mode():
        prepared = shipped.backbone.prepare(image)
        low = shipped.backbone(prepared)
        four = upsample(shipped.backbone.normalise(prepared), low, [shipped.upsampler] * 2)
        eight = upsample(shipped.backbone.normalise(prepared), low, [shipped.upsampler] * 3)
        assert torch.equal(shipped(image, scale=4), four) and four.shape == (1, 384, 12, 20)
        assert torch.equal(shipped(image, scale=8), eight) and eight.shape == (1, 384, 24, 40)
        # 4 passes reach 48×80 ≥ 45×70, then one antialiased bilinear shrink
        own = shipped(image, scale="image")
        sixteen = upsample(shipped.backbone.normalise(prepared), low, [shipped.upsampler] * 4)
        assert own.shape == (1, 384, 45, 70)
        torch.testing.assert_close(own, resize_features(sixteen, (45, 70)), rtol=0, atol=0)
        # between two powers of two: 2 passes (12×20), shrunk to 11×17
        torch.testing.assert_close(shipped(image, output_size=(11, 17)), resize_features(four, (11, 17)),
                                   rtol=0, atol=0)
        # no larger than the grid: the backbone's own features, resized
        assert torch.equal(shipped(image, output_size=(3, 5)), low)
    assert torch.isfinite(own).all()


def test_guided_final_step_stops_the_passes_at_the_guidance_then_follows_the_image(shipped, real_photos):
    """``final_step="guided"``: learned passes to the first grid reaching a quarter of the image (like
    ``--to-image``), then :func:`wrcup.ops.guided_upsample` guided by the images, written without output-sized
    coefficient maps; where the passes reach the size themselves, nothing changes."""
    from wrcup.models.bundle import upsample_to_size
    from wrcup.ops import guided_upsample

    image = _photo(real_photos, (70, 105))             # grid 5×8; a quarter of the image is reached at 20×32
    with torch.inference_mode():
        out = shipped(image, scale=8, final_step="guided")
        guide, feats = shipped.encode(image)
        high = upsample_to_size(shipped.upsampler, guide, feats, (20, 32))
        expected = guided_upsample(high, image, (40, 64))
        assert out.shape == (1, 384, 40, 64)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
        assert (out - shipped(image, scale=8)).abs().max() > 0.1      # not the three-pass output
        assert torch.equal(shipped(image, scale=4, final_step="guided"), shipped(image, scale=4))
        with pytest.raises(ValueError, match="final_step must be one of"):
            shipped(image, scale=8, final_step="nearest")


def test_guided_last_step_without_gradients_equals_the_differentiable_one():
    from wrcup.models.bundle import guided_last_step
    from wrcup.ops import guided_upsample

    torch.manual_seed(0)
    feats, images = torch.randn(2, 5, 6, 7, dtype=torch.float64), torch.rand(2, 3, 30, 41, dtype=torch.float64)
    with torch.no_grad():
        light = guided_last_step(feats, images, (25, 40))
    feats.requires_grad_()
    full = guided_last_step(feats, images, (25, 40))
    full.sum().backward()
    assert feats.grad is not None and light.shape == (2, 5, 25, 40)
    torch.testing.assert_close(light, full.detach(), rtol=0, atol=1e-12)
    with torch.no_grad():   # half precision: computed in float32, returned in float16
        half = guided_last_step(feats.detach().half(), images, (25, 40))
        expected = guided_upsample(feats.detach().half().float(), images.float(), (25, 40)).half()
    assert half.dtype == torch.float16
    torch.testing.assert_close(half, expected, rtol=0, atol=2e-3 * float(expected.abs().max()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is off inside: float32's values
        under_autocast = guided_last_step(feats.detach().float(), images.float(), (25, 40))
    with torch.no_grad():
        plain = guided_last_step(feats.detach().float(), images.float(), (25, 40))
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain, rtol=0, atol=0)


@pytest.mark.parametrize("grid, size, image_hw, expected", [
    ((5, 8), (40, 64), (70, 112), (20, 32)),     # two passes reach a quarter of the image, then guided
    ((5, 8), (20, 32), (70, 112), (20, 32)),     # the passes reach the size: no guided step
    ((5, 8), (12, 14), (70, 112), (12, 14)),     # one pass, then a resize
    ((5, 8), (200, 20), (70, 112), (200, 20)),   # 20×32 is wider than the size: passes and a resize
])
def test_guided_learned_grid(grid, size, image_hw, expected):
    from wrcup.models.bundle import guided_learned_grid

    assert guided_learned_grid(grid, size, image_hw) == expected


@pytest.mark.parametrize("image_size, kwargs, expected", [
    ((57, 200), dict(scale=4), (16, 56)),            # grid 4×14, a 1:3.5 strip
    ((29, 100), dict(scale="image"), (29, 100)),    # grid 2×7: 4 passes (32×112), then down
    ((200, 29), dict(scale=2), (28, 4)),             # tall and narrow: grid 14×2
    ((200, 29), dict(output_size=(90, 7)), (90, 7)),  # 3 passes (112×16), then down
    ((31, 31), dict(output_size=(1, 1)), (1, 1)),
])
def test_output_shapes_for_odd_sizes_and_aspect_ratios(shipped, real_photos, image_size, kwargs, expected):
    with torch.inference_mode():
        high, low = shipped(_photo(real_photos, image_size), return_low_res=True, **kwargs)
    assert high.shape == (1, 384, *expected) and high.dtype == low.dtype
    assert torch.isfinite(high).all()


def test_upsampled_features_at_any_size_stay_close_to_the_backbone_features(shipped, real_photos):
    image = _photo(real_photos, (112, 140))
    with torch.inference_mode():
        low = shipped.backbone(image)
        for kwargs in (dict(scale=4), dict(output_size=(30, 37))):     # grid 8×10: two passes
            high = shipped(image, **kwargs)
            bil = torch.nn.functional.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
            assert torch.nn.functional.cosine_similarity(high, bil, dim=1).mean() > 0.8


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=3), "scale must be one of 2, 4, 8, 'image'"),
    (dict(scale="full"), "scale must be one of"),
    (dict(output_size=(0, 10)), "output_size must be a pair of positive ints"),
    (dict(output_size=(10, 10), scale=4), "output_size or scale, not both"),
    (dict(output_size=(100_000, 10)), "at most 5"),
])
def test_bad_output_size_or_scale_gives_clear_errors(shipped, kwargs, match):
    with pytest.raises(ValueError, match=match):
        shipped(torch.rand(1, 3, 56, 56), **kwargs)


def test_several_passes_need_a_repeatable_upsampler(shipped):
    from wrcup.models.bundle import UpsampledBackbone

    class Other(torch.nn.Module):
        def forward(self, image, features):
            return torch.nn.functional.interpolate(features, scale_factor=2)

    model = UpsampledBackbone(shipped.backbone, Other())
    x = torch.rand(1, 3, 56, 56)
    assert model(x).shape == (1, 384, 8, 8) and model(x, output_size=(7, 5)).shape == (1, 384, 7, 5)
    with pytest.raises(ValueError, match="needs 2 passes"):
        model(x, scale=4)


def test_a_file_that_is_not_a_checkpoint_names_the_argument_and_what_was_expected(tmp_path, real_photos):
    for path in (real_photos[0], tmp_path / "notes.txt"):
        if not path.exists():
            path.write_text("not a checkpoint")
        with pytest.raises(ValueError) as info:
            wrcup.load(path)
        message = str(info.value)
        assert "name_or_path" in message and str(path) in message and "not a wrcup checkpoint" in message
        assert ".safetensors" in message and "wrc-dinov2-s14-imgfocus" in message and "\n" not in message
        assert "header" not in message  # not the safetensors parser's words


def test_the_model_resizes_once_to_the_patch_grid_and_checks_once(shipped, real_photos, monkeypatch):
    """480×640 → 448×602 directly would be the CLI's input; the model itself: 230×300 → 224×294 (nearest multiple
    of 14), one interpolation of the image and one value check on the way to the backbone."""
    import wrcup._checks as checks
    import wrcup.models.bundle as bundle
    from wrcup.data.images import load_image

    image = torch.nn.functional.interpolate(load_image(real_photos[0])[None], size=(230, 300), mode="bilinear",
                                            antialias=True).clamp(0, 1)
    resizes, scans = [], []
    real_interpolate, real_check = torch.nn.functional.interpolate, checks.check_image_values

    def interpolate(x, *args, **kwargs):
        if x.shape[1] == 3:  # an image, not features
            resizes.append(tuple(x.shape[-2:]))
        return real_interpolate(x, *args, **kwargs)

    def check(x, name="images"):
        scans.append(tuple(x.shape))
        return real_check(x, name)

    monkeypatch.setattr(torch.nn.functional, "interpolate", interpolate)
    for module in (checks, bundle, __import__("wrcup.backbones.vit", fromlist=["_"])):
        if hasattr(module, "check_image_values"):
            monkeypatch.setattr(module, "check_image_values", check)
    with torch.inference_mode():
        high, low = shipped(image, return_low_res=True)
    monkeypatch.undo()
    assert resizes == [(230, 300)] and scans == [(1, 3, 230, 300)]
    oracle = torch.nn.functional.interpolate(image, size=(224, 294), mode="bilinear", antialias=True,
                                             align_corners=False)
    with torch.inference_mode():
        assert torch.equal(low, shipped.backbone(oracle))
    assert high.shape == (1, 384, 32, 42)
