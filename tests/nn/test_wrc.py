"""wrcup.nn.WRC and wrcup.nn.Converse2d: parameters, state dicts, registry, forward against the oracles."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
from oracles import spec_layer  # noqa: E402

import wrcup.nn as wnn  # noqa: E402
from wrcup.nn import WRC, Converse2d, UpsampleOperator, create_operator, list_operators  # noqa: E402
from wrcup.ops import converse2d, weighted_reverse_conv  # noqa: E402


# tiny problems: intra-op threads only add wake-up latency on the shared 2-core machines
pytestmark = pytest.mark.usefixtures("one_thread")


def test_wrc_state_dict_matches_authors_layout():
    C, k = 6, 2
    m = WRC(C, kernel_size=k)
    sd = m.state_dict()
    assert list(sd) == ["weight", "bias", "w_conv_low.weight", "w_conv_high.weight"]
    assert sd["weight"].shape == (1, C, k, k)
    assert sd["bias"].shape == (1, C, 1, 1)
    assert sd["w_conv_low.weight"].shape == (C, C, 3, 3)
    assert sd["w_conv_high.weight"].shape == (C, C, 3, 3)
    assert m.w_conv_low.bias is None and m.w_conv_high.bias is None
    assert m.w_conv_low.padding == (1, 1) and m.w_conv_high.padding == (1, 1)
    assert sum(p.numel() for p in m.parameters()) == C * k * k + C + 2 * 9 * C * C


def test_converse2d_state_dict():
    C, k = 5, 3
    m = Converse2d(C, kernel_size=k)
    sd = m.state_dict()
    assert list(sd) == ["weight", "bias"]
    assert sd["weight"].shape == (1, C, k, k) and sd["bias"].shape == (1, C, 1, 1)
    assert sum(p.numel() for p in m.parameters()) == C * k * k + C


@pytest.mark.parametrize("cls", [WRC, Converse2d])
def test_initialisation(cls):
    torch.manual_seed(0)
    m = cls(7, kernel_size=3)
    w = m.weight.detach()
    assert torch.all(w > 0)
    assert torch.allclose(w.sum(dim=(-2, -1)), torch.ones(1, 7), atol=1e-6)  # softmax over the κ² taps
    assert not torch.allclose(w, torch.full_like(w, 1 / 9))  # from a random draw, not uniform
    assert torch.equal(m.bias.detach(), torch.zeros(1, 7, 1, 1))
    assert isinstance(m, UpsampleOperator) and m.channels == 7 and m.scale == 2


@pytest.mark.parametrize("mode", ["reference", "aligned"])
def test_strict_load_round_trip(mode):
    torch.manual_seed(1)
    src = WRC(4, mode=mode)
    with torch.no_grad():
        src.bias.normal_()
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = WRC(4, mode=mode)
    dst.load_state_dict(torch.load(buf), strict=True)
    x = torch.randn(2, 4, 5, 6)
    assert torch.equal(src(x), dst(x))


def test_loads_authors_style_state_dict_strictly():
    C = 3
    authors = {
        "weight": torch.rand(1, C, 2, 2),
        "bias": torch.randn(1, C, 1, 1),
        "w_conv_low.weight": torch.randn(C, C, 3, 3),
        "w_conv_high.weight": torch.randn(C, C, 3, 3),
    }
    m = WRC(C)
    m.load_state_dict(authors, strict=True)
    with pytest.raises(RuntimeError):
        WRC(C).load_state_dict({**authors, "extra": torch.zeros(1)}, strict=True)
    x = torch.randn(1, C, 4, 4, dtype=torch.float64)
    ref = spec_layer(
        x, authors["weight"].double(), authors["bias"].double(), authors["w_conv_low.weight"].double(),
        authors["w_conv_high.weight"].double(), 2, 2, "circular", 1e-5, "reference",
    )
    assert torch.allclose(m(x), ref, rtol=0, atol=1e-12)


def test_registry():
    names = set(list_operators())
    assert {"wrc-reference", "wrc-aligned", "wrc-exact", "converse2d", "bilinear", "transposed"} <= names
    for name, mode in (("wrc-reference", "reference"), ("wrc-aligned", "aligned"), ("wrc-exact", "exact")):
        m = create_operator(name, 4, scale=3, padding=1, padding_mode="reflect")
        assert isinstance(m, WRC) and m.mode == mode and m.scale == 3 and m.channels == 4
        assert m.padding == 1 and m.padding_mode == "reflect"
    m = create_operator("converse2d", 4, scale=3, kernel_size=3)
    assert isinstance(m, Converse2d) and m.scale == 3 and m.weight.shape == (1, 4, 3, 3)
    assert "WRC" in wnn.__all__ and "Converse2d" in wnn.__all__


@pytest.mark.parametrize("name", ["wrc-reference", "wrc-aligned", "wrc-exact", "converse2d"])
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_forward_shapes_and_dtypes(name, scale, device):
    torch.manual_seed(2)
    m = create_operator(name, 3, scale=scale).to(device)
    x = torch.randn(2, 3, 4, 5, device=device)
    out = m(x)
    assert out.shape == (2, 3, 4 * scale, 5 * scale) and out.dtype == torch.float32 and out.device.type == device.type
    assert torch.isfinite(out).all()
    assert m(x.to(torch.bfloat16)).dtype == torch.bfloat16
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_modules_equal_functional(device):
    torch.manual_seed(3)
    x = torch.randn(2, 4, 5, 3).to(device)
    m = WRC(4, kernel_size=3, scale=3, padding=1, padding_mode="replicate", safeguards=True).to(device)
    ref = weighted_reverse_conv(
        x, m.weight, m.bias, m.w_conv_low.weight, m.w_conv_high.weight, scale=3, padding=1,
        padding_mode="replicate", safeguards=True,
    )
    assert torch.equal(m(x), ref)
    c = Converse2d(4, scale=2, padding=1, padding_mode="zeros", eps=1e-3).to(device)
    assert torch.equal(c(x), converse2d(x, c.weight, c.bias, scale=2, padding=1, padding_mode="zeros", eps=1e-3))


def test_double_module():
    m = WRC(2).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    assert m(x).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels": 0}, r"^channels must be >= 1"),
        ({"kernel_size": 0}, r"^kernel_size must be >= 1"),
        ({"scale": 0}, r"^scale must be >= 1"),
        ({"padding": -1}, r"^padding must be >= 0"),
        ({"padding_mode": "wrap"}, r"^padding_mode must be one of"),
        ({"eps": 0.0}, r"^eps must be > 0"),
        ({"mode": "fast"}, r"^mode must be one of"),
    ],
)
def test_module_rejects(kwargs, match):
    args = {"channels": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        WRC(**args)
    if "mode" not in kwargs:
        with pytest.raises(ValueError, match=match):
            Converse2d(**args)


def test_prior_conv_auto_is_factored_without_gradients_only():
    from wrcup.nn.wrc import _resolve_prior_conv

    assert WRC(4).prior_conv == "auto"
    assert _resolve_prior_conv("auto") == "direct"  # gradients on: the training path's arithmetic
    with torch.no_grad():
        assert _resolve_prior_conv("auto") == "factored"
        assert _resolve_prior_conv("direct") == "direct"
    with torch.inference_mode():
        assert _resolve_prior_conv("auto") == "factored"
    torch.manual_seed(0)
    layer = WRC(16)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        inference = layer(x)
    training = layer(x).detach()
    assert float((inference - training).abs().max() / training.abs().max()) < 1e-5
