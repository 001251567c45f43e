"""wrcup.ops closed forms and layers against independent float64 oracles (tests/ops/oracles.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracles import (  # noqa: E402
    bilinear_prior,
    dense_weighted_solve,
    pad_indexed,
    spec_layer,
    spec_transcription,
)

from wrcup.ops import converse2d, reverse_conv, weighted_reverse_conv, wrc_closed_form  # noqa: E402

f64 = torch.float64


def _on(device, *tensors):
    """The tensors on ``device`` (the operator runs there; oracles stay on the CPU in float64)."""
    return [t.to(device) for t in tensors]


# tiny problems: intra-op threads only add wake-up latency on the shared 2-core machines
pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(B, C, h, w, s, k, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(B, C, h, w, generator=g, dtype=dtype)
    kernel = torch.rand(C, k, k, generator=g, dtype=dtype) + 0.1
    lam = torch.rand(B, C, 1, 1, generator=g, dtype=dtype) + 0.05
    w_low = torch.rand(B, C, h, w, generator=g, dtype=dtype) * 3
    w_high = torch.rand(B, C, s * h, s * w, generator=g, dtype=dtype) * 2
    prior = torch.randn(B, C, s * h, s * w, generator=g, dtype=dtype)
    return y, kernel, lam, w_low, w_high, prior


def _layer_params(C, k, seed=0, dtype=f64, conv_scale=0.5):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.softmax(torch.randn(1, C, k * k, generator=g, dtype=dtype), -1).reshape(1, C, k, k)
    bias = torch.randn(1, C, 1, 1, generator=g, dtype=dtype) * 0.5
    conv_low = torch.randn(C, C, 3, 3, generator=g, dtype=dtype) * conv_scale
    conv_high = torch.randn(C, C, 3, 3, generator=g, dtype=dtype) * conv_scale
    return kernel, bias, conv_low, conv_high


# ------------------------------------------------------------------ constant weights: the exact minimiser
@pytest.mark.parametrize("mode", ["reference", "aligned"])
@pytest.mark.parametrize("s,k,h,w", [(2, 2, 3, 4), (2, 3, 4, 3), (3, 2, 2, 3), (1, 3, 4, 5), (2, 1, 3, 3), (2, 4, 3, 2)])
def test_constant_weights_equal_dense_solve(mode, s, k, h, w, device):
    B, C = 2, 2
    y, kernel, _, _, _, prior = _problem(B, C, h, w, s, k, seed=s * 10 + k)
    lam = torch.tensor([[[[0.3]], [[0.05]]], [[[1.2]], [[0.7]]]], dtype=f64)
    wl_c = torch.tensor([[0.8, 2.5], [0.0, 1.0]], dtype=f64)  # one constant per (b, c), a zero included
    wh_c = torch.tensor([[0.4, 0.0], [1.5, 0.2]], dtype=f64)
    w_low = wl_c[:, :, None, None].expand(B, C, h, w)
    w_high = wh_c[:, :, None, None].expand(B, C, s * h, s * w)
    y_d, kernel_d, lam_d, w_low_d, w_high_d, prior_d = _on(device, y, kernel, lam, w_low, w_high, prior)
    out = wrc_closed_form(y_d, kernel_d, lam_d, w_low_d, w_high_d, s, prior_d, mode=mode)
    assert out.shape == (B, C, s * h, s * w) and out.dtype == f64 and out.device.type == device.type
    out = out.cpu()
    for b in range(B):
        for c in range(C):
            ref = dense_weighted_solve(
                y[b, c], kernel[c], float(lam[b, c]), float(wl_c[b, c]), float(wh_c[b, c]), s, prior[b, c], mode
            )
            assert torch.allclose(out[b, c], ref, rtol=0, atol=1e-10), (b, c, (out[b, c] - ref).abs().max())


@pytest.mark.parametrize("s,k,h,w", [(2, 2, 3, 4), (3, 3, 2, 3), (1, 2, 3, 3), (2, 4, 4, 3)])
def test_reverse_conv_equals_dense_solve(s, k, h, w, device):
    B, C = 2, 3
    y, kernel, lam, _, _, prior = _problem(B, C, h, w, s, k, seed=7 + s + k)
    for pr in (prior, None):
        out = reverse_conv(*_on(device, y, kernel[None], lam), s, None if pr is None else pr.to(device)).cpu()  # 1×C×κ×κ kernel
        x_bar = bilinear_prior(y, s) if pr is None else pr
        for b in range(B):
            for c in range(C):
                ref = dense_weighted_solve(y[b, c], kernel[c], float(lam[b, c]), 1.0, 0.0, s, x_bar[b, c], "aligned")
                assert torch.allclose(out[b, c], ref, rtol=0, atol=1e-10)


def test_reverse_conv_scalar_lam_and_is_wrc_special_case():
    y, kernel, _, _, _, _ = _problem(2, 2, 3, 5, 2, 2, seed=3)
    out = reverse_conv(y, kernel, 0.25, 2)
    as_wrc = wrc_closed_form(y, kernel, 0.25, torch.ones_like(y), torch.zeros(2, 2, 6, 10, dtype=f64), 2, mode="aligned")
    assert torch.allclose(out, as_wrc, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ varying weights: the authors' formula
@pytest.mark.parametrize("mode", ["reference", "aligned"])
@pytest.mark.parametrize(
    "s,k,h,w", [(2, 2, 3, 4), (2, 2, 4, 4), (3, 2, 3, 2), (3, 4, 2, 3), (1, 1, 3, 4), (1, 3, 5, 3), (2, 3, 5, 3), (2, 1, 2, 5)]
)
def test_varying_weights_equal_spec_transcription(mode, s, k, h, w, device):
    y, kernel, lam, w_low, w_high, prior = _problem(3, 2, h, w, s, k, seed=100 + 10 * s + k)
    out = wrc_closed_form(*_on(device, y, kernel, lam, w_low, w_high), s, prior.to(device), mode=mode).cpu()
    ref = spec_transcription(y, kernel, lam, w_low, w_high, s, prior, mode)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12), (out - ref).abs().max()
    # and the default prior
    out = wrc_closed_form(*_on(device, y, kernel, lam, w_low, w_high), s, mode=mode).cpu()
    ref = spec_transcription(y, kernel, lam, w_low, w_high, s, None, mode)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_varying_weights_are_not_the_exact_minimiser():
    """The closed form is far (tens of %) from the minimiser once weights vary (docs/ALGORITHM.md#the-authors-closed-form-wrc-reference)."""
    y, kernel, lam, w_low, w_high, prior = _problem(1, 1, 3, 3, 2, 2, seed=5)
    out = wrc_closed_form(y, kernel, lam, w_low, w_high, 2, prior, mode="aligned")
    ref = dense_weighted_solve(y[0, 0], kernel[0], float(lam), w_low[0, 0], w_high[0, 0], 2, prior[0, 0], "aligned")
    assert float((out[0, 0] - ref).norm() / ref.norm()) > 0.05


def test_safeguards_clamp_denominator(device):
    y, kernel, _, w_low, w_high, prior = _problem(2, 2, 3, 4, 2, 2, seed=11)
    w_low, w_high = w_low * 1e-4, w_high * 1e-5  # D = ω_L·P + ↓avg ω_H + λ < 1e-3
    lam = 1e-5
    y_d, kernel_d, w_low_d, w_high_d, prior_d = _on(device, y, kernel, w_low, w_high, prior)
    out = wrc_closed_form(y_d, kernel_d, lam, w_low_d, w_high_d, 2, prior_d, safeguards=True).cpu()
    ref = spec_transcription(y, kernel, lam, w_low, w_high, 2, prior, "reference", min_denominator=1e-3)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-9)
    plain = wrc_closed_form(y, kernel, lam, w_low, w_high, 2, prior)
    assert not torch.allclose(out, plain, rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------ the measured quirk of the reference roll
@pytest.mark.parametrize("s", [2, 3])
def test_reference_roll_shifts_data_term_by_half_map(s):
    h, w = 6, 8  # even, so that half the high-res map is a multiple of s
    y = torch.randn(2, 2, h, w, dtype=f64, generator=torch.Generator().manual_seed(1))
    delta = torch.ones(2, 1, 1, dtype=f64)
    # the data term dominates: the grid values miss y by ~λ/ω_L, the FFT rounding is ~1e-16·ω_L/λ
    w_low = torch.full_like(y, 1e4)
    w_high = torch.zeros(2, 2, s * h, s * w, dtype=f64)
    lam = 1e-4
    ref_mode = wrc_closed_form(y, delta, lam, w_low, w_high, s, mode="reference")[..., ::s, ::s]
    aligned = wrc_closed_form(y, delta, lam, w_low, w_high, s, mode="aligned")[..., ::s, ::s]
    assert torch.allclose(ref_mode, torch.roll(y, (h // 2, w // 2), dims=(-2, -1)), atol=1e-6)
    assert torch.allclose(aligned, y, atol=1e-6)
    assert not torch.allclose(ref_mode, y, atol=1e-2)
    # a 2×2 delta: tap (0, 0) is the one the reference keeps aligned to its half-map shift,
    # the centre tap (1, 1) is the one "aligned" mode keeps in place.
    d00 = torch.zeros(2, 2, 2, dtype=f64)
    d00[:, 0, 0] = 1
    d11 = torch.zeros(2, 2, 2, dtype=f64)
    d11[:, 1, 1] = 1
    ref_mode = wrc_closed_form(y, d00, lam, w_low, w_high, s, mode="reference")[..., ::s, ::s]
    aligned = wrc_closed_form(y, d11, lam, w_low, w_high, s, mode="aligned")[..., ::s, ::s]
    assert torch.allclose(ref_mode, torch.roll(y, (h // 2, w // 2), dims=(-2, -1)), atol=1e-6)
    assert torch.allclose(aligned, y, atol=1e-6)


# ------------------------------------------------------------------ the whole layer
@pytest.mark.parametrize("padding_mode", ["circular", "reflect", "replicate", "zeros"])
@pytest.mark.parametrize("mode", ["reference", "aligned"])
def test_layer_equals_spec_pipeline(padding_mode, mode, device):
    C, s, k, p = 3, 2, 2, 2
    x = torch.randn(2, C, 4, 5, dtype=f64, generator=torch.Generator().manual_seed(3))
    kernel, bias, conv_low, conv_high = _layer_params(C, k, seed=4)
    out = weighted_reverse_conv(*_on(device, x, kernel, bias, conv_low, conv_high), scale=s, padding=p,
                                padding_mode=padding_mode, mode=mode).cpu()
    ref = spec_layer(x, kernel, bias, conv_low, conv_high, s, p, padding_mode, 1e-5, mode)
    assert out.shape == (2, C, 8, 10)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12), (out - ref).abs().max()


@pytest.mark.parametrize("s,k,p", [(1, 3, 1), (3, 4, 1), (2, 1, 0), (3, 2, 2)])
def test_layer_scales_kernels_paddings(s, k, p, device):
    C = 2
    x = torch.randn(1, C, 3, 4, dtype=f64, generator=torch.Generator().manual_seed(s + k + p))
    kernel, bias, conv_low, conv_high = _layer_params(C, k, seed=k)
    out = weighted_reverse_conv(*_on(device, x, kernel[0], bias.flatten(), conv_low, conv_high), scale=s,
                                padding=p).cpu()
    ref = spec_layer(x, kernel, bias, conv_low, conv_high, s, p, "circular", 1e-5, "reference")
    assert out.shape == (1, C, 3 * s, 4 * s)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_layer_safeguards_match_spec_pipeline(device):
    C = 2
    x = torch.randn(1, C, 4, 4, dtype=f64, generator=torch.Generator().manual_seed(8)) * 100
    kernel, bias, conv_low, conv_high = _layer_params(C, 2, seed=9, conv_scale=200.0)  # conv outputs beyond 1e4
    bias = torch.full_like(bias, -30.0)  # λ ≈ ε, so some D < 1e-3 where ω_L ≈ 0
    out = weighted_reverse_conv(*_on(device, x, kernel, bias, conv_low, conv_high), safeguards=True).cpu()
    ref = spec_layer(x, kernel, bias, conv_low, conv_high, 2, 2, "circular", 1e-5, "reference", 1e-3, 1e4)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_converse2d_layer_equals_dense_solve(device):
    C, s, p = 2, 2, 1
    x = torch.randn(2, C, 3, 4, dtype=f64, generator=torch.Generator().manual_seed(2))
    kernel, bias, _, _ = _layer_params(C, 3, seed=2)
    bias = bias + 8.0  # λ = sigmoid(b − 9) + ε of order 0.3
    out = converse2d(*_on(device, x, kernel, bias), scale=s, padding=p).cpu()
    y = pad_indexed(x, p, "circular")
    prior = bilinear_prior(y, s)
    lam = torch.sigmoid(bias - 9) + 1e-5
    for b in range(2):
        for c in range(C):
            full = dense_weighted_solve(y[b, c], kernel[0, c], float(lam[0, c]), 1.0, 0.0, s, prior[b, c], "aligned")
            assert torch.allclose(out[b, c], full[p * s : -p * s, p * s : -p * s], rtol=0, atol=1e-10)


def test_layer_exact_mode_is_the_minimiser(device):
    C, s, p = 2, 2, 1
    x = torch.randn(1, C, 3, 3, dtype=f64, generator=torch.Generator().manual_seed(6))
    kernel, bias, conv_low, conv_high = _layer_params(C, 2, seed=6)
    out = weighted_reverse_conv(*_on(device, x, kernel, bias, conv_low, conv_high), scale=s, padding=p, mode="exact",
                                tol=1e-12, max_iter=500).cpu()
    y = pad_indexed(x, p, "circular")
    w_low = torch.log1p(F.conv2d(y, conv_low, padding=1) ** 2)
    prior = bilinear_prior(y, s)
    w_high = torch.log1p(F.conv2d(prior, conv_high, padding=1) ** 2)
    lam = F.softplus(bias) + 1e-5
    for c in range(C):
        full = dense_weighted_solve(y[0, c], kernel[0, c], float(lam[0, c]), w_low[0, c], w_high[0, c], s, prior[0, c], "aligned")
        assert torch.allclose(out[0, c], full[p * s : -p * s, p * s : -p * s], rtol=0, atol=1e-9)


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_in_same_dtype_out(dtype):
    C = 3
    x = torch.randn(2, C, 5, 4, generator=torch.Generator().manual_seed(0))
    kernel, bias, conv_low, conv_high = (t.float() for t in _layer_params(C, 2, seed=1))
    ref = weighted_reverse_conv(x, kernel, bias, conv_low, conv_high)
    out = weighted_reverse_conv(x.to(dtype), kernel, bias, conv_low, conv_high)
    assert out.dtype == dtype and out.shape == ref.shape
    # the only rounding is the input's and the output's: half-precision relative error
    tol = 1e-2 if dtype == torch.float16 else 6e-2
    assert torch.allclose(out.float(), ref, rtol=tol, atol=tol * ref.abs().max())
    y = torch.randn(1, C, 4, 4).to(dtype)
    assert reverse_conv(y, kernel, 0.5, 2).dtype == dtype
    assert wrc_closed_form(y, kernel, 0.5, y.abs(), torch.ones(1, C, 8, 8, dtype=dtype), 2).dtype == dtype
    assert converse2d(x.to(dtype), kernel, bias).dtype == dtype


def test_float32_matches_float64(device):
    C = 4
    x = torch.randn(2, C, 6, 7, dtype=f64, generator=torch.Generator().manual_seed(12))
    params = _layer_params(C, 2, seed=12)
    ref = weighted_reverse_conv(x, *params)
    out = weighted_reverse_conv(*_on(device, x.float(), *(t.float() for t in params))).cpu()
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max())


def test_autocast_is_disabled_inside():
    C = 2
    x = torch.randn(1, C, 4, 4)
    params = [t.float() for t in _layer_params(C, 2, seed=0)]
    ref = weighted_reverse_conv(x, *params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = weighted_reverse_conv(x, *params)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ gradients
def test_gradcheck_reverse_conv():
    y, kernel, lam, _, _, prior = _problem(2, 2, 2, 3, 2, 2, seed=21)
    inputs = tuple(t.clone().requires_grad_() for t in (y, kernel, lam, prior))
    assert torch.autograd.gradcheck(lambda a, b, c, d: reverse_conv(a, b, c, 2, d), inputs)
    assert torch.autograd.gradcheck(lambda a, b, c: reverse_conv(a, b, c, 3), inputs[:3])


@pytest.mark.parametrize("mode", ["reference", "aligned"])
def test_gradcheck_closed_form(mode):
    y, kernel, lam, w_low, w_high, prior = _problem(2, 2, 2, 3, 2, 2, seed=22)
    inputs = tuple(t.clone().requires_grad_() for t in (y, kernel, lam, w_low, w_high, prior))
    assert torch.autograd.gradcheck(lambda *a: wrc_closed_form(*a[:5], 2, a[5], mode=mode), inputs)
    assert torch.autograd.gradcheck(lambda *a: wrc_closed_form(*a[:5], 2, a[5], mode=mode, safeguards=True), inputs)


@pytest.mark.parametrize("mode", ["reference", "aligned"])
@pytest.mark.parametrize("s,k,h,w", [(2, 2, 5, 6), (3, 3, 3, 3), (1, 2, 4, 5), (2, 3, 3, 4)])
@pytest.mark.parametrize("safeguards", [False, True])
def test_gradients_equal_autograd_through_transcription(mode, s, k, h, w, safeguards, device):
    """The hand-written backward (run on ``device``) against autograd through the plain complex-FFT transcription
    (CPU). torch.autograd.gradcheck below runs on the CPU in float64 only: its finite differences test the
    formula, which is the same on every device."""
    y, kernel, lam, w_low, w_high, prior = _problem(2, 3, h, w, s, k, seed=30 + s + k)
    if safeguards:  # make some denominators fall under the 1e-3 floor
        w_low[0, 0] = 0.0
        w_high[0, 0] *= 1e-5
        lam[0, 0] = 1e-5
    inputs = [t.clone().to(device).requires_grad_() for t in (y, kernel, lam, w_low, w_high, prior)]
    refs = [t.clone().requires_grad_() for t in (y, kernel, lam, w_low, w_high, prior)]
    g = torch.randn(2, 3, s * h, s * w, dtype=f64, generator=torch.Generator().manual_seed(0))
    out = wrc_closed_form(*inputs[:5], s, inputs[5], mode=mode, safeguards=safeguards)
    ref = spec_transcription(*refs[:5], s, refs[5], mode, 1e-3 if safeguards else None)
    assert torch.allclose(out.cpu(), ref, rtol=0, atol=1e-12)
    out.backward(g.to(device))
    ref.backward(g)
    for name, a, b in zip(("y", "kernel", "lam", "w_low", "w_high", "prior"), inputs, refs):
        scale = b.grad.abs().max()
        assert torch.allclose(a.grad.cpu(), b.grad, rtol=0, atol=1e-11 * max(1.0, float(scale))), name


@pytest.mark.parametrize("mode,padding_mode", [("reference", "circular"), ("aligned", "reflect")])
def test_gradcheck_layer(mode, padding_mode):
    C = 2
    x = torch.randn(1, C, 3, 4, dtype=f64, generator=torch.Generator().manual_seed(23))
    params = _layer_params(C, 2, seed=23)
    inputs = tuple(t.clone().requires_grad_() for t in (x, *params))

    def layer(x, kernel, bias, conv_low, conv_high):
        return weighted_reverse_conv(x, kernel, bias, conv_low, conv_high, padding=1, padding_mode=padding_mode, mode=mode)

    assert torch.autograd.gradcheck(layer, inputs)


def test_gradcheck_converse2d_layer():
    x = torch.randn(1, 2, 3, 3, dtype=f64, generator=torch.Generator().manual_seed(24))
    kernel, bias, _, _ = _layer_params(2, 2, seed=24)
    inputs = tuple(t.clone().requires_grad_() for t in (x, kernel, bias + 9))
    assert torch.autograd.gradcheck(lambda a, b, c: converse2d(a, b, c, padding=1), inputs)


@pytest.mark.parametrize("H,W", [(6, 8), (5, 7), (4, 1), (1, 4), (3, 2), (72, 72)])
def test_mirror_half_and_its_adjoint_equal_index_oracles(H, W):
    from wrcup.ops.closed_form import _mirror_half, _mirror_half_add_

    g = torch.Generator().manual_seed(H * 100 + W)
    z = torch.randn(2, 3, H, W, generator=g, dtype=torch.float64)
    Wh = W // 2 + 1
    rows = torch.tensor([(-i) % H for i in range(H)])[:, None]
    cols = torch.tensor([(-j) % W for j in range(Wh)])[None, :]
    assert torch.equal(_mirror_half(z), z[..., rows, cols])
    values = torch.randn(2, 3, H, Wh, generator=g, dtype=torch.float64)
    expected = z.clone()
    expected[..., rows, cols] += values
    assert torch.equal(_mirror_half_add_(z.clone(), values), expected)
