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
    """Mean of the s×s contiguous (H/s)×(W/s) blocks of a real H×W map (⇓ of a spatial map, docs/ALGORITHM.md#the-authors-closed-form-wrc-reference)."""
    *lead, H, W = z.shape
    return z.reshape(*lead, scale, H // scale, scale, W // scale).mean(dim=(-4, -2))


def tile_half(q_full: torch.Tensor, scale: int, width: int) -> torch.Tensor:
    """↑rep: a full low-res h×w spectrum → the high-res half-plane (s·h)×(width//2+1), value q[k mod h, k mod w]."""
    h, w = q_full.shape[-2:]
    cols = torch.arange(width // 2 + 1, device=q_full.device) % w
    q_cols = q_full.index_select(-1, cols)
    return q_cols.repeat(*([1] * (q_full.ndim - 2)), scale, 1)


def alias_mean_half(z_half: torch.Tensor, scale: int, width: int) -> torch.Tensor:
    """↓avg of a Hermitian high-res spectrum given as its rfft2 half-plane → the full low-res h×w spectrum.

    Equals ``z_full.reshape(..., s, h, s, w).mean((-4, -2))`` for the full spectrum of a real map, without building
    it: the row aliases are summed on the half-plane first (one pass), then :func:`fold_half_columns`.

    Args:
        z_half: (..., H, width//2+1) complex (or real, for a real even spectrum such as |F|²).
        scale: s, with H = s·h and width = W = s·w.
        width: W, the full high-res width.
    Returns:
        (..., h, w) tensor, dtype of ``z_half``.
    """
    H, Wh = z_half.shape[-2:]
    rows = z_half.reshape(*z_half.shape[:-2], scale, H // scale, Wh).sum(dim=-3)  # h × (W//2+1)
    return fold_half_columns(rows, scale, width)


def fold_half_columns(rows: torch.Tensor, scale: int, width: int) -> torch.Tensor:
    """Second half of :func:`alias_mean_half`: row-alias sums on the half-plane (..., h, W//2+1) → the mean over
    all s² aliases, (..., h, w). The missing columns c > W//2 of the row-summed h×W map are read from the
    Hermitian mirror conj(rows[−j, W − c]) on the small low-res grid."""
    h, Wh = rows.shape[-2:]
    w = width // scale
    n_tail = width - Wh  # columns W//2+1 … W−1
    if n_tail > 0:
        flip_rows = (-torch.arange(h, device=rows.device)) % h
        tail = rows.index_select(-2, flip_rows)[..., 1 : n_tail + 1].flip(-1)
        if tail.is_complex():
            tail = tail.conj()
        rows = torch.cat([rows, tail], dim=-1)  # h × W, row-summed full spectrum
    return rows.reshape(*rows.shape[:-1], scale, w).sum(dim=-2) / (scale * scale)


def block_mean_real(z: torch.Tensor, scale: int) -> torch.Tensor:
    """Same values as :func:`alias_mean_real`, summing one axis at a time (a single reduction over two
    non-adjacent axes is an order of magnitude slower on CPU)."""
    *lead, H, W = z.shape
    h, w = H // scale, W // scale
    rows = z.reshape(*lead, scale, h, W).sum(dim=-3)
    return rows.reshape(*lead, h, scale, w).sum(dim=-2) / (scale * scale)


def rep_mul(z_half: torch.Tensor, q_full: torch.Tensor, scale: int, width: int) -> torch.Tensor:
    """z_half · ↑rep(q) on the high-res half-plane, broadcasting q over the s row blocks instead of tiling it.

    Args:
        z_half: (..., s·h, width//2+1). q_full: (..., h, w) full low-res spectrum (or real map) with width = s·w.
    Returns:
        (..., s·h, width//2+1), equal to ``z_half * tile_half(q_full, scale, width)``.
    """
    H, Wh = z_half.shape[-2:]
    h, w = q_full.shape[-2:]
    cols = torch.arange(Wh, device=q_full.device) % w
    q_cols = q_full.index_select(-1, cols).unsqueeze(-3)  # (..., 1, h, Wh)
    lead = torch.broadcast_shapes(z_half.shape[:-2], q_full.shape[:-2])
    prod = z_half.reshape(*z_half.shape[:-2], scale, h, Wh) * q_cols
    return prod.reshape(*lead, H, Wh)
