"""The matrix-product DFT path (wrcup.ops._matmul_dft, used for ONNX export) against the FFT path, in float64."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracles import spec_layer  # noqa: E402

from wrcup.ops import converse2d, weighted_reverse_conv  # noqa: E402
from wrcup.ops._matmul_dft import matmul_dft, use_matmul_dft  # noqa: E402

f64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def _params(C, k, seed, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.softmax(torch.randn(1, C, k * k, generator=g, dtype=dtype), -1).reshape(1, C, k, k)
    bias = torch.randn(1, C, 1, 1, generator=g, dtype=dtype) * 0.5
    conv_low = torch.randn(C, C, 3, 3, generator=g, dtype=dtype) * 0.5
    conv_high = torch.randn(C, C, 3, 3, generator=g, dtype=dtype) * 0.5
    return kernel, bias, conv_low, conv_high


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("mode", ["reference", "aligned"])
@pytest.mark.parametrize("s,k,h,w,p,safeguards", [(2, 2, 5, 7, 2, False), (3, 3, 4, 4, 1, True), (2, 4, 6, 3, 0, False),
                                                 (1, 2, 4, 5, 2, False)])
def test_wrc_layer_matches_fft_path(mode, s, k, h, w, p, safeguards):
    C = 3
    x = torch.randn(2, C, h, w, generator=torch.Generator().manual_seed(h * w), dtype=f64)
    params = _params(C, k, seed=s + k)
    kw = dict(scale=s, padding=p, mode=mode, safeguards=safeguards)
    fft = weighted_reverse_conv(x, *params, **kw)
    assert not use_matmul_dft()
    with matmul_dft():
        assert use_matmul_dft()
        mm = weighted_reverse_conv(x, *params, **kw)
    assert not use_matmul_dft()
    assert mm.dtype == f64 and mm.shape == fft.shape
    assert _rel(mm, fft) < 1e-12
    # and the independent full-complex-FFT transcription of the authors' formula
    oracle = spec_layer(x, params[0], params[1].flatten(), params[2], params[3], s=s, p=p,
                        shift="reference" if mode == "reference" else "aligned",
                        min_denominator=1e-3 if safeguards else None, conv_clamp=1e4 if safeguards else None)
    assert _rel(mm, oracle) < 1e-10


@pytest.mark.parametrize("s,k,h,w", [(2, 2, 5, 7), (3, 3, 4, 4)])
def test_converse2d_layer_matches_fft_path(s, k, h, w):
    C = 3
    x = torch.randn(2, C, h, w, generator=torch.Generator().manual_seed(7), dtype=f64)
    kernel, bias, _, _ = _params(C, k, seed=3)
    bias = bias + 9.0  # λ = sigmoid(b − 9) + ε of order 0.5: a well-conditioned solve
    fft = converse2d(x, kernel, bias, scale=s)
    with matmul_dft():
        mm = converse2d(x, kernel, bias, scale=s)
    assert _rel(mm, fft) < 1e-12


def test_float32_agrees_with_float64():
    """The phases are reduced on exact integers, so float32 matrices stay accurate at the network's grid size."""
    C = 4
    x = torch.randn(1, C, 32, 32, generator=torch.Generator().manual_seed(1), dtype=f64)
    params = _params(C, 2, seed=5)
    want = weighted_reverse_conv(x, *params)
    with matmul_dft():
        got = weighted_reverse_conv(x.float(), *(t.float() for t in params))
    assert got.dtype == torch.float32
    assert _rel(got.double(), want) < 1e-5
