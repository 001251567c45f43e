"""Whole reverse-convolution layers: pad → weights → solve → crop (overview: docs/DESIGN.md).

* :func:`weighted_reverse_conv` — the WRC layer (weights from two learned 3×3 convolutions, λ = softplus(b) + ε).
* :func:`converse2d` — the Converse2D layer (λ = sigmoid(b − 9) + ε, no weights).

Both take B×C×h×w features and return B×C×(s·h)×(s·w) features in the input dtype (float16/bfloat16 are computed in
float32, with autocast disabled inside). Parameters are cast to the compute dtype, so a float32 module accepts a
float64 input and vice versa.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_finite, check_positive_int, check_tensor
from . import _matmul_dft
from .closed_form import (_SAFE_MIN_DENOMINATOR, _kernel3d, _reverse_conv, bilinear_prior, compute_dtype, kernel_shift,
                          no_autocast, wrc_solve)

__all__ = ["weighted_reverse_conv", "converse2d", "conv_of_bilinear_prior", "LAYER_MODES", "PADDING_MODES",
           "PRIOR_CONVS"]

LAYER_MODES = ("reference", "aligned", "exact")
PADDING_MODES = ("circular", "reflect", "replicate", "zeros")
# How the high-res weight convolution conv_high(x̄) is evaluated: "direct" convolves the s²-times larger prior,
# "factored" mixes channels at low resolution first (same result up to rounding, see conv_of_bilinear_prior).
PRIOR_CONVS = ("direct", "factored")
_SAFE_MAX_CONV = 1e4  # the authors' CUDA extension clamps the weight-convolution outputs to ±1e4
_LN2 = math.log(2.0)


def _check_layer_input(x, kernel, scale, padding, padding_mode, check_values: bool = True):
    """Shared validation; returns (C×κ×κ kernel, scale, padding). Shapes always; values (NaN/Inf in x, one
    host-device synchronisation) only with ``check_values``."""
    check_tensor(x, "x", 4)
    scale = check_positive_int(scale, "scale")
    padding = check_positive_int(padding, "padding", minimum=0)
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    B, C, h, w = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"x must have a non-empty spatial size, got shape {tuple(x.shape)}")
    kernel = _kernel3d(kernel, C)
    if padding_mode == "reflect" and padding >= min(h, w):
        raise ValueError(f"padding must be < the input size {min(h, w)} for padding_mode='reflect', got {padding}")
    if padding_mode == "circular" and padding > min(h, w):
        raise ValueError(f"padding must be <= the input size {min(h, w)} for padding_mode='circular', got {padding}")
    H, W = scale * (h + 2 * padding), scale * (w + 2 * padding)
    if kernel.shape[-2] > H or kernel.shape[-1] > W:
        raise ValueError(
            f"kernel of size {tuple(kernel.shape[-2:])} is larger than the high-res padded grid {(H, W)}"
        )
    if check_values:
        check_finite(x, "x")
    return kernel, scale, padding


def _check_bias(bias, channels: int) -> torch.Tensor:
    check_tensor(bias, "bias")
    if bias.numel() != channels:
        raise ValueError(f"bias must hold one value per channel ({channels}), got shape {tuple(bias.shape)}")
    return bias.reshape(1, channels, 1, 1)


def _check_conv_weight(weight, name: str, channels: int) -> torch.Tensor:
    check_tensor(weight, name, 4)
    co, ci, kh, kw = weight.shape
    if co != channels or ci != channels:
        raise ValueError(f"{name} must have shape ({channels}, {channels}, k, k) for {channels} channels, got {tuple(weight.shape)}")
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"{name} must have an odd square spatial size (3×3 in WRC), got {tuple(weight.shape)}")
    return weight


def _pad(x: torch.Tensor, padding: int, padding_mode: str) -> torch.Tensor:
    if padding == 0:
        return x
    mode = "constant" if padding_mode == "zeros" else padding_mode
    return F.pad(x, (padding,) * 4, mode=mode)


def _crop(x: torch.Tensor, margin: int) -> torch.Tensor:
    if margin == 0:
        return x
    return x[..., margin:-margin, margin:-margin]


def _weight_log2(z: torch.Tensor, conv_weight: torch.Tensor, safeguards: bool) -> torch.Tensor:
    """log2(1 + conv(z)²): the weight map log(1 + conv(z)²) divided by ln 2 (the caller multiplies ln 2 back in,
    fused with its next operation). The conv uses its own zero padding on the already padded map, like the
    authors. On CPU torch.log2 is vectorised where torch.log and torch.log1p are not (~30× faster here)."""
    # inference reuses the conv's buffer (autograd needs c and 1 + c² otherwise)
    return _log2_one_plus_square(F.conv2d(z, conv_weight, padding=conv_weight.shape[-1] // 2), safeguards)


def _log2_one_plus_square(c: torch.Tensor, safeguards: bool) -> torch.Tensor:
    """log2(1 + c²) of a conv output (see :func:`_weight_log2`)."""
    if not c.requires_grad:
        if safeguards:
            c.clamp_(-_SAFE_MAX_CONV, _SAFE_MAX_CONV)
        return c.square_().add_(1.0).log2_()
    if safeguards:
        c = c.clamp(-_SAFE_MAX_CONV, _SAFE_MAX_CONV)
    return torch.log2(torch.addcmul(torch.ones((), dtype=c.dtype, device=c.device), c, c))


@functools.lru_cache(maxsize=64)
def _shifted_bilinear_matrix(n: int, scale: int, kernel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(s·n)×(κ·n) matrix [S_0·U, …, S_{κ−1}·U]: U is bilinear upsampling n → s·n with align_corners=True along one
    axis, S_d shifts its rows by d − ⌊κ/2⌋ with zeros outside (the zero padding of a κ-tap convolution).
    Built outside inference mode: the cached matrix is reused by calls that differentiate through it."""
    with torch.inference_mode(False):
        return _bilinear_matrix(n, scale, kernel).to(dtype=dtype, device=device)


def _bilinear_matrix(n: int, scale: int, kernel: int) -> torch.Tensor:
    N, pad = scale * n, kernel // 2
    U = torch.zeros(N, n, dtype=torch.float64)
    if n == 1:
        U[:, 0] = 1.0
    else:
        src = torch.arange(N, dtype=torch.float64) * (n - 1) / (N - 1)
        left = src.floor().long().clamp_(max=n - 2)
        frac = src - left
        U[torch.arange(N), left] = 1 - frac
        U[torch.arange(N), left + 1] += frac
    M = torch.zeros(N, kernel, n, dtype=torch.float64)
    for d in range(kernel):
        lo, hi = max(0, pad - d), min(N, N + pad - d)
        M[lo:hi, d] = U[lo + d - pad:hi + d - pad]
    return M.reshape(N, kernel * n)


def conv_of_bilinear_prior(y: torch.Tensor, weight: torch.Tensor, scale: int) -> torch.Tensor:
    """conv2d(bilinear_prior(y, scale), weight, padding=κ//2) without convolving at high resolution.

    y: B×C×h×w, weight: Co×C×κ×κ (κ odd) → B×Co×(s·h)×(s·w). The bilinear prior x̄ = U_r·y·U_cᵀ (align_corners=True)
    acts on every channel alike, so channel mixing commutes with it: conv(x̄) = Σ_{dy,dx} (S_dy U_r)·(W_{dy,dx} y)·
    (S_dx U_c)ᵀ. The κ² channel mixings run as one 1×1 convolution at low resolution (s² times fewer
    multiply-adds than the direct high-res convolution), the two interpolations as small matrix products.
    """
    B, C, h, w = y.shape
    Co, _, k, _ = weight.shape
    rows = _shifted_bilinear_matrix(h, scale, k, y.dtype, y.device)  # H × κh
    cols = _shifted_bilinear_matrix(w, scale, k, y.dtype, y.device)  # W × κw
    taps = F.conv2d(y, weight.permute(0, 2, 3, 1).reshape(Co * k * k, C, 1, 1))  # B × (Co·κ·κ) × h × w
    taps = taps.view(B, Co, k, k, h, w).transpose(3, 4).reshape(B, Co, k, h, k * w)  # (c, dy, i, dx·j)
    half = (taps @ cols.T).view(B, Co, k * h, scale * w)  # Σ_dx over columns: B × Co × κh × W
    return rows @ half  # Σ_dy over rows: B × Co × H × W


def _prior_weight_log2(y: torch.Tensor, prior: torch.Tensor, conv_weight: torch.Tensor, scale: int,
                       safeguards: bool, prior_conv: str) -> torch.Tensor:
    """log2(1 + conv_high(x̄)²) with x̄ = ``prior`` = bilinear_prior(y, scale)."""
    if prior_conv == "direct":
        return _weight_log2(prior, conv_weight, safeguards)
    return _log2_one_plus_square(conv_of_bilinear_prior(y, conv_weight, scale), safeguards)


def _weight_map(z: torch.Tensor, conv_weight: torch.Tensor, safeguards: bool) -> torch.Tensor:
    """ω = log(1 + conv(z)²), the WRC weight map."""
    return _weight_log2(z, conv_weight, safeguards).mul_(_LN2)


def weighted_reverse_conv(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor,
    weight_conv_low: torch.Tensor,
    weight_conv_high: torch.Tensor,
    scale: int = 2,
    padding: int = 2,
    padding_mode: str = "circular",
    eps: float = 1e-5,
    mode: str = "reference",
    safeguards: bool = False,
    tol: float | None = None,
    max_iter: int | None = None,
    *,
    check_values: bool = True,
    prior_conv: str = "direct",
) -> torch.Tensor:
    """The WRC layer: pad, weight maps, solve, crop.

    y_p = pad(x, p); ω_L = log1p(conv_low(y_p)²); x̄ = bilinear(y_p, s, align_corners=True);
    ω_H = log1p(conv_high(x̄)²); λ = softplus(b) + ε; solve; crop p·s on every side.

    Args:
        x: B×C×h×w features (finite).
        kernel: C×κ×κ or 1×C×κ×κ depthwise kernel.
        bias: C values (any shape with C elements, e.g. 1×C×1×1).
        weight_conv_low, weight_conv_high: C×C×3×3 (no bias) producing ω_L and ω_H.
        scale: integer s ≥ 1.
        padding: p ≥ 0, applied on every side before the solve.
        padding_mode: "circular" (the authors'), "reflect", "replicate" or "zeros".
        eps: ε added to softplus(b).
        mode: "reference" (authors' closed form, kernel rolled by half the map), "aligned" (same closed form,
            centred kernel) or "exact" (the minimiser of the weighted objective, ``wrcup.ops.exact``).
        safeguards: clamp conv outputs to ±1e4 before squaring and D to ≥ 1e-3 (the authors' CUDA extension).
        tol, max_iter: passed to the exact solver (mode="exact"); None keeps its defaults.
        check_values: reject NaN/Inf in x. This reads a value on the host (a device synchronisation on GPUs), so
            the modules of :mod:`wrcup.nn` pass False: networks check their inputs once, at the public entry point.
            Shapes are always checked; nothing is read while torch.compile or torch.export traces.
        prior_conv: "direct" convolves the high-res prior x̄; "factored" computes the same conv_high(x̄) from the
            low-res map (:func:`conv_of_bilinear_prior`; equal up to rounding, ~4× fewer multiply-adds for s = 2).
    Returns:
        B×C×(s·h)×(s·w) in the dtype of x.
    """
    check_choice(mode, "mode", LAYER_MODES)
    check_choice(prior_conv, "prior_conv", PRIOR_CONVS)
    kernel, scale, padding = _check_layer_input(x, kernel, scale, padding, padding_mode, check_values)
    C = x.shape[1]
    bias = _check_bias(bias, C)
    _check_conv_weight(weight_conv_low, "weight_conv_low", C)
    _check_conv_weight(weight_conv_high, "weight_conv_high", C)

    out_dtype = x.dtype
    dt = compute_dtype(x.dtype)
    with no_autocast(x.device):
        y = _pad(x.to(dt), padding, padding_mode)
        w_low = _weight_map(y, weight_conv_low.to(dt), safeguards)
        prior = bilinear_prior(y, scale)
        high_log2 = _prior_weight_log2(y, prior, weight_conv_high.to(dt), scale, safeguards, prior_conv)
        lam = F.softplus(bias.to(dt)) + eps
        kernel = kernel.to(dt)
        if mode == "exact":
            from .exact import wrc_exact_solve  # provided by wrcup.ops.exact

            if torch.onnx.is_in_onnx_export():
                raise NotImplementedError("mode='exact' cannot be exported to ONNX: its PCG solver iterates until "
                                          "convergence (a data-dependent loop); export a closed-form mode")

            options = {k: v for k, v in (("tol", tol), ("max_iter", max_iter)) if v is not None}
            # ω_L, ω_H ≥ 0 and λ > 0 by construction: the solver need not read them back to check
            out = wrc_exact_solve(y, kernel, lam, w_low, high_log2.mul_(_LN2), scale, prior, check_values=False,
                                  **options)
        else:
            lam_total = torch.add(lam, high_log2, alpha=_LN2)  # Λ = ω_H + λ in one pass
            del high_log2
            shift = kernel_shift(mode, (prior.shape[-2], prior.shape[-1]), kernel.shape[-2:])
            if _matmul_dft.use_matmul_dft():  # ONNX export: no complex tensors
                out = _matmul_dft.wrc_solve(y, kernel, w_low, lam_total, scale, prior, shift, safeguards,
                                            _SAFE_MIN_DENOMINATOR)
            else:
                out = wrc_solve(y, kernel, w_low, lam_total, scale, prior, shift, safeguards)
        out = _crop(out, padding * scale)
    return out.to(out_dtype)


def converse2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor,
    scale: int = 2,
    padding: int = 2,
    padding_mode: str = "circular",
    eps: float = 1e-5,
    *,
    check_values: bool = True,
) -> torch.Tensor:
    """The Converse2D layer: pad, λ = sigmoid(b − 9) + ε, :func:`~wrcup.ops.reverse_conv`, crop p·s.

    The prior is bilinear (align_corners=True) upsampling of the padded input, the same prior as WRC, so the two
    operators differ only in their weights; see :class:`wrcup.nn.Converse2d`.

    Args/Returns: as :func:`weighted_reverse_conv` without the weight convolutions.
    """
    kernel, scale, padding = _check_layer_input(x, kernel, scale, padding, padding_mode, check_values)
    bias = _check_bias(bias, x.shape[1])
    out_dtype = x.dtype
    dt = compute_dtype(x.dtype)
    with no_autocast(x.device):
        y = _pad(x.to(dt), padding, padding_mode)
        lam = torch.sigmoid(bias.to(dt) - 9.0) + eps
        kernel, prior = kernel.to(dt), bilinear_prior(y, scale)
        if _matmul_dft.use_matmul_dft():  # ONNX export: no complex tensors
            shift = kernel_shift("aligned", tuple(prior.shape[-2:]), kernel.shape[-2:])
            out = _matmul_dft.reverse_conv(y, kernel, lam, scale, prior, shift)
        else:
            out = _reverse_conv(y, kernel, lam, scale, prior)
        out = _crop(out, padding * scale)
    return out.to(out_dtype)
