"""Backbone geometry, batching, extract() and input validation, on the embedded backbone with real photos."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from backbone_helpers import load_photos, relative_error


def _reference_vit_float64(backbone, images: torch.Tensor) -> torch.Tensor:
    """Straightforward float64 transcription of a DINOv2-style ViT (no timm modules): images in [0, 1] whose
    sides are multiples of the patch size → B×C×h×w last-block patch tokens after the final LayerNorm."""
    state = {k: v.double() for k, v in backbone.model.state_dict().items()}
    p, heads = backbone.patch_size, backbone.num_heads
    mean = torch.tensor(backbone.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, dtype=torch.float64).view(1, 3, 1, 1)
    x = F.conv2d((images.double() - mean) / std, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=p)
    batch, dim, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = state["pos_embed"]
    side = math.isqrt(pos.shape[1] - 1)
    grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(batch, -1, -1), x], dim=1) + torch.cat([pos[:, :1], grid], dim=1)

    def layer_norm(t, prefix):
        return F.layer_norm(t, (dim,), state[prefix + ".weight"], state[prefix + ".bias"], eps=1e-6)

    for i in range(backbone.num_blocks):
        b = f"blocks.{i}."
        y = layer_norm(x, b + "norm1") @ state[b + "attn.qkv.weight"].t() + state[b + "attn.qkv.bias"]
        q, k, v = (t.reshape(batch, -1, heads, dim // heads).transpose(1, 2) for t in y.chunk(3, dim=-1))
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(batch, -1, dim)
        x = x + state[b + "ls1.gamma"] * (y @ state[b + "attn.proj.weight"].t() + state[b + "attn.proj.bias"])
        y = layer_norm(x, b + "norm2") @ state[b + "mlp.fc1.weight"].t() + state[b + "mlp.fc1.bias"]
        y = F.gelu(y) @ state[b + "mlp.fc2.weight"].t() + state[b + "mlp.fc2.bias"]
        x = x + state[b + "ls2.gamma"] * y
    x = layer_norm(x, "norm")
    return x[:, 1:].transpose(1, 2).reshape(batch, dim, h, w)


def test_grid_size_policy(imgfocus_backbone):
    grid = imgfocus_backbone.grid_size
    assert grid(224, 224) == (16, 16)
    assert grid(448, 448) == (32, 32)
    assert grid(224, 336) == (16, 24)
    assert grid(230, 300) == (16, 21)  # 16.43 → 16, 21.43 → 21
    assert grid(21, 20) == (2, 1)  # 1.5 rounds up, 1.43 down
    assert grid(3, 5) == (1, 1)  # at least one patch
    with pytest.raises(ValueError, match="height"):
        grid(0, 10)


def test_non_multiple_size_follows_documented_policy(imgfocus_backbone):
    images = load_photos(230, 300, count=1)
    prepared = imgfocus_backbone.prepare(images)
    assert prepared.shape == (1, 3, 224, 294)
    expected_prepared = F.interpolate(images, size=(224, 294), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(prepared, expected_prepared)
    features = imgfocus_backbone(images)
    assert features.shape == (1, 384, 16, 21)
    assert torch.equal(features, imgfocus_backbone(expected_prepared))
    assert imgfocus_backbone.prepare(prepared) is prepared  # multiples pass through untouched


def test_forward_matches_float64_transcription_non_square(imgfocus_backbone):
    images = load_photos(112, 168, count=1)  # 8×12 grid: position grid resized from 37×37, non-square
    expected = _reference_vit_float64(imgfocus_backbone, images)
    actual = imgfocus_backbone(images)
    assert actual.shape == expected.shape == (1, 384, 8, 12)
    assert relative_error(actual, expected) <= 1e-5


def test_batch_equals_images_one_by_one(imgfocus_backbone):
    images = load_photos(224, 224)
    batched = imgfocus_backbone(images)
    for index in range(len(images)):
        single = imgfocus_backbone(images[index:index + 1])
        assert relative_error(batched[index], single[0]) <= 1e-5


def test_extract_layers_and_facets(imgfocus_backbone):
    images = load_photos(224, 336, count=2)
    backbone = imgfocus_backbone
    out = backbone.extract(images, layers=(0, 5, 10, -1), facets=True)
    assert torch.allclose(out["features"], backbone(images), rtol=0, atol=1e-6)
    assert set(out["layers"]) == {0, 5, 10, -1}
    for tensor in out["layers"].values():
        assert tensor.shape == (2, 384, 16, 24)
    # Layer outputs come before the final norm: normalising the last one gives the features.
    last = out["layers"][-1].flatten(2).transpose(1, 2)
    normed = backbone.model.norm(last).transpose(1, 2).reshape(2, 384, 16, 24)
    assert torch.allclose(normed, out["features"], rtol=0, atol=1e-5)
    assert not torch.allclose(out["layers"][-1], out["features"], atol=1e-2)

    facets = out["facets"]
    assert set(facets) == {"q", "k", "v", "cls_q", "cls_k", "cls_v"}
    for key in ("q", "k", "v"):
        assert facets[key].shape == (2, 384, 16, 24)
        assert facets["cls_" + key].shape == (2, 384)
    # Oracle for the patch keys: the last block's key projection of norm1(block 10 output).
    block = backbone.model.blocks[-1]
    tokens10 = out["layers"][10].flatten(2).transpose(1, 2)
    keys = F.linear(block.norm1(tokens10), block.attn.qkv.weight[384:768], block.attn.qkv.bias[384:768])
    assert torch.allclose(facets["k"], keys.transpose(1, 2).reshape(2, 384, 16, 24), rtol=0, atol=1e-4)
    assert not torch.allclose(facets["k"], facets["q"], atol=1e-2)


def test_extract_without_options(imgfocus_backbone):
    images = load_photos(224, 224, count=1)
    out = imgfocus_backbone.extract(images)
    assert out["layers"] == {} and out["facets"] == {}
    with pytest.raises(ValueError, match="layers"):
        imgfocus_backbone.extract(images, layers=(12,))
    with pytest.raises(TypeError, match="layers"):
        imgfocus_backbone.extract(images, layers=(1.0,))


@pytest.mark.parametrize("bad, error", [
    (torch.rand(3, 224, 224), ValueError),
    (torch.rand(1, 1, 224, 224), ValueError),
    (torch.randint(0, 255, (1, 3, 224, 224)), TypeError),
    (torch.full((1, 3, 28, 28), float("nan")), ValueError),
    ([[0.0]], TypeError),
])
def test_bad_images_are_named(imgfocus_backbone, bad, error):
    with pytest.raises(error, match="images"):
        imgfocus_backbone(bad)
    with pytest.raises(error, match="images"):
        imgfocus_backbone.prepare(bad)


def test_frozen_and_outputs_usable_in_autograd(imgfocus_backbone):
    backbone = imgfocus_backbone
    assert all(not p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.model.training
    features = backbone(load_photos(56, 56, count=1).double())  # float64 input is cast to float32
    assert features.dtype == torch.float32 and not features.is_inference()
    weight = torch.ones(1, 384, 1, 1, requires_grad=True)
    (features * weight).sum().backward()
    assert weight.grad is not None


def test_position_embeddings_cached_per_grid(imgfocus_backbone):
    backbone = imgfocus_backbone
    backbone._pos_cache.clear()
    images = load_photos(56, 70, count=1)
    first = backbone(images)
    assert len(backbone._pos_cache) == 1
    assert torch.equal(backbone(images), first)
    assert len(backbone._pos_cache) == 1


def test_backbone_loaded_under_inference_mode(imgfocus_backbone, session_cache, monkeypatch):
    """Weights created inside torch.inference_mode have no version counter; the position cache must not need one."""
    from wrcup import backbones

    monkeypatch.setenv("WRCUP_CACHE", str(session_cache))
    images = load_photos(56, 70, count=1)
    with torch.inference_mode():
        loaded_inside = backbones.load("dinov2-s14-imgfocus")
        assert loaded_inside.model.pos_embed.is_inference()
        features = loaded_inside(images)
    assert torch.equal(features, imgfocus_backbone(images))
    assert len(loaded_inside._pos_cache) == 0


def test_normalise_uses_the_backbone_statistics_without_resizing(embedded_backbone):
    images = torch.rand(2, 3, 30, 45)
    mean = torch.tensor(embedded_backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(embedded_backbone.std).view(1, 3, 1, 1)
    torch.testing.assert_close(embedded_backbone.normalise(images), (images - mean) / std)
    with pytest.raises(ValueError, match="images"):
        embedded_backbone.normalise(torch.rand(2, 4, 30, 45))
