"""Registry names, the generic forward on other timm ViT layouts, hub failures and weights=PATH loading."""
from __future__ import annotations

import socket

import pytest
import timm
import torch
import torch.nn.functional as F
from backbone_helpers import load_photos, relative_error

from wrcup import backbones
from wrcup.backbones import Backbone

REQUIRED = ["dinov2-s14", "dinov2-b14", "dinov2-l14", "dinov2-g14", "dinov2-s14-reg", "dinov2-b14-reg",
            "dinov2-l14-reg", "dinov2-g14-reg", "dino-s8", "dino-s16", "dino-b8", "dino-b16", "dinov3-s16",
            "dinov3-b16", "clip-b16", "siglip2-b16", "dinov2-s14-imgfocus"]


@pytest.fixture
def no_network(monkeypatch):
    """Every way timm fetches weights, and any socket connection, fails."""
    import timm.models._builder as builder
    import timm.models._hub as hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable (simulated by the test)")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    monkeypatch.setattr(builder, "load_state_dict_from_url", offline)
    monkeypatch.setattr(builder, "download_cached_file", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)


def test_registry_names_exist_in_timm():
    assert set(REQUIRED) <= set(backbones.list_backbones())
    assert backbones.list_backbones()[0] == "dinov2-s14-imgfocus"
    pretrained = set(timm.list_models(pretrained=True))
    for name, spec in backbones.REGISTRY.items():
        assert spec.timm_name in pretrained, name


# Small (2-block) random-init models of each token layout; the reference is timm's own forward_features at
# the stored grid, where our bicubic position resize is the identity.
LAYOUTS = [
    ("vit_small_patch16_224", {}),                          # DINO: class token, pos entry for it
    ("vit_small_patch14_reg4_dinov2", {"img_size": 224}),   # registers, no_embed_class
    ("vit_base_patch16_clip_224", {}),                      # norm_pre (ln_pre)
    ("vit_base_patch16_siglip_224", {}),                    # no class token
    ("vit_small_patch16_dinov3", {}),                       # Eva: RoPE, registers, no absolute pos
    ("vit_small_patch16_dinov3_qkvb", {}),                  # Eva with separate q/v biases
]


@pytest.mark.parametrize("arch, kwargs", LAYOUTS, ids=[a for a, _ in LAYOUTS])
def test_generic_forward_matches_timm(arch, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, depth=2, **kwargs).eval()
    backbone = Backbone(model, arch, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    p = backbone.patch_size
    gh, gw = model.patch_embed.grid_size  # the stored grid: timm uses its position embeddings unchanged
    images = torch.rand(2, 3, gh * p, gw * p)
    normalised = (images - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model.forward_features(normalised)[:, model.num_prefix_tokens:]
    expected = tokens.transpose(1, 2).reshape(2, backbone.dim, gh, gw)
    out = backbone.extract(images, layers=(0,), facets=True)
    assert relative_error(out["features"], expected) <= 1e-5
    assert ("cls_k" in out["facets"]) == (model.cls_token is not None)

    # Facets oracle: the last block's qkv projection (biases included) of its norm1 output.
    captured = []
    block = model.blocks[-1]
    handle = block.norm1.register_forward_hook(lambda m, a, o: captured.append(o))
    backbone(images)
    handle.remove()
    attn = block.attn
    bias = attn.qkv.bias if attn.qkv.bias is not None else (
        torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)) if getattr(attn, "q_bias", None) is not None else None)
    qkv = F.linear(captured[0], attn.qkv.weight, bias)[:, model.num_prefix_tokens:]
    keys = qkv.chunk(3, dim=-1)[1].transpose(1, 2).reshape(2, backbone.dim, gh, gw)
    assert relative_error(out["facets"]["k"], keys) <= 1e-5
    if arch.endswith("qkvb"):
        assert attn.q_bias is not None  # the pre-hook path was exercised


def test_unknown_and_non_vit_names():
    with pytest.raises(ValueError, match="registered backbone"):
        backbones.load("not-a-backbone")
    with pytest.raises(ValueError, match="not a ViT"):
        backbones.load("resnet50")
    with pytest.raises(TypeError, match="name"):
        backbones.load(14)


def test_hub_failure_names_weights_option(no_network):
    with pytest.raises(backbones.HubUnavailableError) as info:
        backbones.load("dino-s16")
    message = str(info.value)
    assert "weights=" in message and "unreachable" in message and "dino-s16" in message


@pytest.fixture(scope="module")
def local_weights(imgfocus_backbone, tmp_path_factory):
    """The embedded backbone's timm state dict saved as .safetensors and .pth."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    state = {k: v.contiguous() for k, v in imgfocus_backbone.model.state_dict().items()}
    save_file(state, str(folder / "vits14.safetensors"))
    torch.save(state, folder / "vits14.pth")
    return folder, state


@pytest.mark.parametrize("filename", ["vits14.safetensors", "vits14.pth"])
def test_weights_path_round_trip(local_weights, imgfocus_backbone, no_network, filename):
    folder, _ = local_weights
    backbone = backbones.load("dinov2-s14", weights=folder / filename)
    assert backbone.describe()["weights"] == str(folder / filename)
    images = load_photos(224, 224, count=1)
    assert torch.equal(backbone(images), imgfocus_backbone(images))


def test_weights_path_errors(local_weights, tmp_path):
    folder, state = local_weights
    with pytest.raises(FileNotFoundError, match="weights"):
        backbones.load("dinov2-s14", weights=tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="weights must be"):
        (tmp_path / "w.txt").write_text("x")
        backbones.load("dinov2-s14", weights=tmp_path / "w.txt")

    incomplete = {k: v for k, v in state.items() if k != "norm.weight"}
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"missing keys \[norm\.weight\]"):
        backbones.load("dinov2-s14", weights=tmp_path / "incomplete.pth")

    torch.save({"state": state, "callback": _NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="weights_only"):
        backbones.load("dinov2-s14", weights=tmp_path / "pickled.pth")

    with pytest.raises(ValueError, match="do not fit|do not match"):
        backbones.load("dino-s16", weights=folder / "vits14.safetensors")


class _NotATensor:
    """An arbitrary pickled object, which torch.load(weights_only=True) must refuse."""


def test_geometry_from_the_architecture_alone():
    """dim and patch size without weights (built on the meta device; nothing is downloaded)."""
    from wrcup.backbones import geometry

    assert geometry("dinov2-s14-imgfocus") == (384, 14)
    assert geometry("dinov2-b14") == (768, 14) and geometry("dino-s8") == (384, 8)
    with pytest.raises(ValueError, match="registered backbone"):
        geometry("not-a-backbone")
