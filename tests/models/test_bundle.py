"""wrcup.load: the shipped checkpoint, local files, torch.hub entry points, clear errors."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import wrcup
from wrcup.models.bundle import SHIPPED_CHECKPOINTS, checkpoint_path
from wrcup.train.checkpoint import read_metadata

REPO_HUBCONF = __import__("pathlib").Path(__file__).resolve().parents[2] / "hubconf.py"


@pytest.fixture(scope="module")
def shipped():
    return wrcup.load()


def test_shipped_checkpoint_is_packaged_and_small():
    path = checkpoint_path("wrc-dinov2-s14-imgfocus")
    assert path.stat().st_size < 20e6
    meta = read_metadata(path)
    assert meta["backbone"] == "dinov2-s14-imgfocus" and meta["operator"] == "wrc-reference"
    assert meta["dim"] == 384 and meta["patch_size"] == 14 and meta["steps"] > 0


def test_default_model_doubles_the_backbone_grid(shipped, real_photos):
    from wrcup.data.images import load_image

    image = torch.nn.functional.interpolate(load_image(real_photos[0])[None], size=(112, 168), mode="bilinear")
    with torch.inference_mode():
        high, low = shipped(image, return_low_res=True)
        assert torch.equal(low, shipped.backbone(image))
    assert low.shape == (1, 384, 8, 12) and high.shape == (1, 384, 16, 24)
    assert torch.isfinite(high).all()
    assert shipped.metadata["operator"] == "wrc-reference"
    # the upsampled features stay in the backbone's feature space: close to the bilinear upsampling
    bil = torch.nn.functional.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.nn.functional.cosine_similarity(high, bil, dim=1).mean() > 0.8


def test_hub_entry_points(shipped):
    spec = importlib.util.spec_from_file_location("hubconf", REPO_HUBCONF)
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    model = hub.wrc_upsampler(str(checkpoint_path("wrc-dinov2-s14-imgfocus")))
    x = torch.rand(1, 3, 56, 56)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), shipped(x))
    with pytest.raises(ValueError, match="pretrained"):
        hub.wrc_dinov2_s14_imgfocus(pretrained=False)


def test_unknown_name_and_bad_images_give_clear_errors(shipped, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a shipped name"):
        wrcup.load("wrc-nonexistent")
    with pytest.raises(ValueError, match="3 channels"):
        shipped(torch.rand(1, 4, 56, 56))
    with pytest.raises(ValueError, match="NaN"):
        shipped(torch.full((1, 3, 56, 56), float("nan")))
    assert set(SHIPPED_CHECKPOINTS) == {"wrc-dinov2-s14-imgfocus"}
