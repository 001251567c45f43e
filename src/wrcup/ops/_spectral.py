"""Spectral building blocks shared by the reverse-convolution solvers.

Conventions (per channel, all maps periodic): a low-res grid h×w, a high-res grid H×W = (s·h)×(s·w).
Spectra of real maps are kept as ``torch.fft.rfft2`` half-planes, H×(W//2+1).

* ``S``  keeps pixel (s·i, s·j):  FFT_h(S z)[j] = mean over the s² aliases of FFT_H(z)   ("↓avg").
* ``Sᵀ`` inserts zeros:           FFT_H(Sᵀ q)[k] = FFT_h(q)[k mod (h, w)]              ("↑rep").
"""
from __future__ import annotations

import math

import torch


def kernel_spectrum(kernel: torch.Tensor, size: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """rfft2 half-plane of ``kernel`` placed at the top-left of an H×W zero map, then rolled by ``-shift``.

    Evaluated as a small separable DFT (κ taps per axis) instead of an FFT of a mostly-zero map.

    Args:
        kernel: (..., κh, κw) real tensor.
        size: (H, W), the periodic grid.
        shift: (dh, dw); Converse2D centres the kernel with (κh//2, κw//2), the WRC reference uses (H//2, W//2).
    Returns:
        (..., H, W//2+1) complex tensor, dtype matching ``kernel`` (complex64 for float32).
    """
    H, W = size
    kh, kw = kernel.shape[-2:]
    real = kernel.dtype
    rows = torch.arange(H, device=kernel.device, dtype=real)
    cols = torch.arange(W // 2 + 1, device=kernel.device, dtype=real)
    taps_h = torch.arange(kh, device=kernel.device, dtype=real) - shift[0]
    taps_w = torch.arange(kw, device=kernel.device, dtype=real) - shift[1]
    # exp(-2πi k m / N), computed from integer products reduced mod N to keep float32 phases exact.
    phase_h = torch.remainder(rows[:, None] * taps_h[None, :], H) * (-2 * math.pi / H)
    phase_w = torch.remainder(cols[:, None] * taps_w[None, :], W) * (-2 * math.pi / W)
    e_h = torch.polar(torch.ones_like(phase_h), phase_h)  # H×κh
    e_w = torch.polar(torch.ones_like(phase_w), phase_w)  # (W//2+1)×κw
    k = kernel.to(e_h.dtype)
    return torch.einsum("...ab,ia,jb->...ij", k, e_h, e_w)


def alias_mean_real(z: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean of the s×s contiguous (H/s)×(W/s) blocks of a real H×W map (the spec's ↓avg of a spatial map)."""
    *lead, H, W = z.shape
    return z.reshape(*lead, scale, H // scale, scale, W // scale).mean(dim=(-4, -2))


def tile_half(q_full: torch.Tensor, scale: int, width: int) -> torch.Tensor:
    """↑rep: a full low-res h×w spectrum → the high-res half-plane (s·h)×(width//2+1), value q[k mod h, k mod w]."""
    h, w = q_full.shape[-2:]
    cols = torch.arange(width // 2 + 1, device=q_full.device) % w
    q_cols = q_full.index_select(-1, cols)
    return q_cols.repeat(*([1] * (q_full.ndim - 2)), scale, 1)


def flip_periodic(z: torch.Tensor) -> torch.Tensor:
    """z[-i mod H, -j mod W] for a full (non-half-plane) periodic map."""
    return torch.roll(torch.flip(z, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


def zero_insert(q: torch.Tensor, scale: int) -> torch.Tensor:
    """Sᵀ: B×C×h×w → B×C×(s·h)×(s·w) with q at rows/cols 0, s, 2s, …"""
    *lead, h, w = q.shape
    out = q.new_zeros(*lead, h, scale, w, scale)
    out[..., :, 0, :, 0] = q
    return out.reshape(*lead, h * scale, w * scale)
