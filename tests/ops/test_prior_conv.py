"""The factored high-res weight convolution equals convolving the bilinear prior (float64 oracle: torch's own
interpolate + conv2d), values and gradients, and the WRC layer gives the same output either way."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wrcup.nn import WRC
from wrcup.ops import weighted_reverse_conv
from wrcup.ops.layer import conv_of_bilinear_prior

pytestmark = pytest.mark.usefixtures("one_thread")


def _direct(y, weight, scale):
    prior = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=True)
    return F.conv2d(prior, weight, padding=weight.shape[-1] // 2)


@pytest.mark.parametrize("shape,out_channels,kernel,scale", [
    ((2, 3, 5, 7), 4, 3, 2),   # non-square, channel count changes
    ((1, 2, 1, 6), 3, 3, 2),   # one row: the prior repeats it
    ((1, 3, 4, 4), 3, 5, 3),   # wider kernel, scale 3
    ((2, 2, 3, 3), 2, 1, 2),   # 1×1 kernel
])
def test_factored_prior_conv_matches_direct_float64(shape, out_channels, kernel, scale, device):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_()
    weight = torch.randn(out_channels, shape[1], kernel, kernel, generator=g, dtype=torch.float64).to(device)
    weight.requires_grad_()
    ref = _direct(y, weight, scale)
    got = conv_of_bilinear_prior(y, weight, scale)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64).to(device)
    ref_grads = torch.autograd.grad(ref, (y, weight), grad)
    got_grads = torch.autograd.grad(got, (y, weight), grad)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reference", "aligned"])
def test_wrc_layer_factored_equals_direct(mode, device):
    g = torch.Generator().manual_seed(1)
    C = 5
    x = torch.randn(2, C, 6, 5, generator=g, dtype=torch.float64).to(device)
    params = [torch.softmax(torch.randn(1, C, 4, generator=g, dtype=torch.float64), -1).view(1, C, 2, 2),
              torch.randn(1, C, 1, 1, generator=g, dtype=torch.float64),
              0.3 * torch.randn(C, C, 3, 3, generator=g, dtype=torch.float64),
              0.3 * torch.randn(C, C, 3, 3, generator=g, dtype=torch.float64)]
    params = [p.to(device) for p in params]
    for p in params:
        p.requires_grad_()
    outs = [weighted_reverse_conv(x, *params, mode=mode, prior_conv=pc) for pc in ("direct", "factored")]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad(o.square().sum(), params) for o in outs]
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_wrc_module_float32_factored_close_and_validated():
    torch.manual_seed(0)
    direct = WRC(16)
    factored = WRC(16, prior_conv="factored")
    factored.load_state_dict(direct.state_dict())
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(factored(x), direct(x), rtol=1e-4, atol=1e-5)
    assert set(factored.state_dict()) == set(direct.state_dict())
    with pytest.raises(ValueError, match="prior_conv"):
        WRC(4, prior_conv="fft")


def test_factored_prior_conv_after_inference_mode_still_differentiable():
    # its interpolation matrices are cached: one built under inference_mode must not be an inference tensor
    g = torch.Generator().manual_seed(2)
    y = torch.randn(1, 3, 7, 9, generator=g)
    weight = torch.randn(2, 3, 3, 3, generator=g)
    with torch.inference_mode():
        first = conv_of_bilinear_prior(y, weight, 2)
    y.requires_grad_()
    out = conv_of_bilinear_prior(y, weight, 2)
    torch.testing.assert_close(out.detach(), first, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(out.sum(), y)
    torch.testing.assert_close(grad, torch.autograd.grad(_direct(y, weight, 2).sum(), y)[0], rtol=1e-4, atol=1e-5)
