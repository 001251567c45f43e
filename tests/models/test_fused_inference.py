"""Fused oneDNN inference convolutions (wrcup.models.fuse.fused_inference): taken only without gradients on
a BatchNorm-folded float32 CPU network, same outputs as the plain modules (float64 oracle), weights re-read."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from network_helpers import as_after_training

from wrcup.models import build_upsampler, fold_batchnorm
from wrcup.models import fuse as U

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not U._FUSED_CONV, reason="this torch build has no oneDNN fused convolution")]


def folded_network(seed=0, dim=32):
    torch.manual_seed(seed)
    net = build_upsampler("wrc-reference", dim, 14, residual=True)
    as_after_training(net)  # non-trivial BatchNorm statistics and affine parameters
    return fold_batchnorm(net.eval())


def inputs(batch=2, h=4, w=6, dim=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 14 * h, 14 * w, generator=g), torch.randn(batch, dim, h, w, generator=g)


def count_fused_calls(monkeypatch) -> list:
    calls = []
    original = U.conv_fused

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(U, "conv_fused", spy)
    return calls


def relative_error(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_fused_path_equals_the_plain_modules_and_a_float64_oracle(monkeypatch):
    net = folded_network()
    image, feats = inputs()
    calls = count_fused_calls(monkeypatch)
    with torch.inference_mode():
        fused = net(image, feats)
    # stem; image blocks (4 convs with a strided or projecting shortcut, else 3): 4+3+4+3, 4+3; feature path 4+3;
    # fuse 4; head
    assert len(calls) == 1 + 14 + 7 + 7 + 4 + 1
    assert fused.is_contiguous() and fused.shape == (2, 32, 8, 12)
    with torch.enable_grad():  # the training path: plain modules, direct high-res convolution
        plain = net(image, feats).detach()
    oracle = net.double()(image.double(), feats.double()).detach()
    assert relative_error(fused, oracle) < 1e-5
    assert relative_error(fused, plain) < 1e-5
    assert relative_error(plain, oracle) < 1e-5


def test_not_fused_with_gradients_float64_or_batchnorm_not_folded(monkeypatch):
    net = folded_network()
    image, feats = inputs(batch=1)
    calls = count_fused_calls(monkeypatch)
    net(image, feats)  # gradients on
    with torch.no_grad():
        net.double()(image.double(), feats.double())
        net.float()
        unfolded = build_upsampler("wrc-reference", 32, 14, residual=True).eval()
        unfolded.head = nn.Identity()  # the head alone has no BatchNorm: leave only the blocks to test
        unfolded.fuse = nn.Identity()
        unfolded.image_branch(image, (4, 6), 14)
        unfolded.feature_path(torch.randn(1, 64, 4, 6))
    assert calls == []
    assert not U.fused_inference(torch.ones(1, requires_grad=False).double())
    with torch.no_grad():
        assert U.fused_inference(torch.ones(1))
    assert not U.fused_inference(torch.ones(1))  # gradients on


def test_weights_changed_after_a_fused_call_are_used(monkeypatch):
    net = folded_network()
    image, feats = inputs(batch=1)
    with torch.inference_mode():
        net(image, feats)  # lays out and caches every weight
    with torch.no_grad():
        for conv in (net.head, net.fuse.conv2, net.image_branch.stem[0]):
            conv.weight.mul_(1.5)
        fused = net(image, feats)
        monkeypatch.setattr(U, "_FUSED_CONV", False)
        plain = net(image, feats)
    assert relative_error(fused, plain) < 1e-6


def test_weights_laid_out_in_inference_mode_serve_no_grad_calls():
    net = folded_network()
    image, feats = inputs(batch=1)
    with torch.inference_mode():
        first = net(image, feats).clone()
    with torch.no_grad():
        again = net(image, feats)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_network_created_in_inference_mode_runs_fused_without_caching_layouts(monkeypatch):
    """Weights made under torch.inference_mode have no version counter: laid out on every call, never cached."""
    image, feats = inputs(batch=1)
    with torch.inference_mode():
        net = folded_network()
        assert net.head.weight.is_inference()
        fused = net(image, feats)
        assert net.head not in U._PACKED_WEIGHTS
        monkeypatch.setattr(U, "_FUSED_CONV", False)
        plain = net(image, feats)
    assert relative_error(fused, plain) < 1e-6


def test_bf16_autocast_runs_the_fused_convolutions_in_bf16(monkeypatch):
    """Under CPU bfloat16 autocast every fused convolution computes in bfloat16 (as autocast's own convolutions
    would); the output keeps the features' dtype and differs from float32 by bfloat16 rounding only, no more
    than the plain modules under autocast do (a float32 residual is added in float32, as autocast's add is)."""
    net = folded_network()
    image, feats = inputs()
    seen = []  # the dtype each fused convolution computes in (its input as passed to oneDNN)
    original = U._packed_weight

    def spy(conv, x):
        seen.append(x.dtype)
        return original(conv, x)

    monkeypatch.setattr(U, "_packed_weight", spy)
    with torch.inference_mode():
        full = net(image, feats)
        calls = len(seen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = net(image, feats)
    assert calls == 34 and seen == [torch.float32] * calls + [torch.bfloat16] * calls
    assert fused.dtype == torch.float32 and fused.shape == full.shape
    monkeypatch.setattr(U, "_FUSED_CONV", False)  # the plain modules under the same autocast
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = net(image, feats)
    assert len(seen) == 2 * calls
    with torch.no_grad():
        oracle = net.double()(image.double(), feats.double())
    # bfloat16 keeps 8 significant bits (relative rounding 2^-8 ≈ 4e-3 per operation)
    for got in (fused, plain):
        err = relative_error(got, oracle)
        assert 1e-5 < err < 5e-2, err  # not float32's rounding, and within a few dozen bfloat16 roundings
    assert relative_error(fused, oracle) < 1.5 * relative_error(plain, oracle)
