"""Independent float64 oracles for the reverse-convolution operators (test-only code).

Written plainly from the problem and the authors' formula (docs/ALGORITHM.md), without sharing code with ``wrcup.ops``:

* dense matrices (``kernel_matrix``, ``decimation_matrix``) and a dense solve of the weighted normal equations
  (``dense_weighted_solve``): the exact minimiser of
  ||ω_L^{1/2} ⊙ (y − S K x)||² + ||(ω_H + λ)^{1/2} ⊙ (x − x̄)||²  for one channel;
* ``spec_transcription``: the authors' closed-form formula with full complex FFTs, line by line (batched torch).

Conventions: low-res grid h×w, high-res grid H×W = (s·h)×(s·w), all maps periodic. The kernel k (κ×κ) is placed at
the top-left of an H×W zero map and rolled by ``-shift`` before the FFT; K is circular convolution with that map.
``shift`` is a pair (dh, dw), an int (same on both axes), or the strings "reference" (H//2, W//2: the WRC authors'
roll) and "aligned" (κ//2, κ//2: Converse2D's centring).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "resolve_shift",
    "kernel_matrix",
    "decimation_matrix",
    "dense_weighted_solve",
    "dense_objective",
    "spec_transcription",
    "bilinear_prior",
    "pad_indexed",
    "spec_layer",
    "dense_conv_matrix",
    "dense_decimation",
    "dense_solve",
]


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def resolve_shift(shift, H: int, W: int, kh: int, kw: int) -> tuple[int, int]:
    """shift as (dh, dw) ints; see the module docstring for the accepted spellings."""
    if isinstance(shift, str):
        if shift == "reference":
            return H // 2, W // 2
        if shift == "aligned":
            return kh // 2, kw // 2
        raise ValueError(f"unknown shift {shift!r}")
    if isinstance(shift, (int, np.integer)):
        return int(shift), int(shift)
    dh, dw = shift
    return int(dh), int(dw)


def kernel_matrix(kernel2d, H: int, W: int, shift) -> np.ndarray:
    """Dense HW×HW matrix of circular convolution with ``kernel2d`` (κh×κw) rolled by ``-shift``.

    The kernel map is kmap[(a − dh) mod H, (b − dw) mod W] = k[a, b] and (K x)[i, j] = Σ_{m,n} kmap[m, n]·x[i−m, j−n],
    so tap (a, b) links output (i, j) to input ((i − a + dh) mod H, (j − b + dw) mod W). Row-major pixel order.
    Returns a numpy array (float64) whatever the input type.
    """
    k = _np(kernel2d)
    kh, kw = k.shape
    dh, dw = resolve_shift(shift, H, W, kh, kw)
    K = np.zeros((H * W, H * W))
    for i in range(H):
        for j in range(W):
            for a in range(kh):
                for b in range(kw):
                    K[i * W + j, ((i - a + dh) % H) * W + (j - b + dw) % W] += k[a, b]
    return K


def decimation_matrix(h: int, w: int, s: int) -> np.ndarray:
    """Dense hw×HW matrix S keeping pixel (s·i, s·j) of an (s·h)×(s·w) map (phase 0). numpy float64."""
    H, W = s * h, s * w
    S = np.zeros((h * w, H * W))
    for i in range(h):
        for j in range(w):
            S[i * w + j, (s * i) * W + s * j] = 1.0
    return S


def dense_weighted_solve(y2d, kernel2d, lam: float, w_low2d, w_high2d, s: int, prior2d, shift):
    """Exact minimiser (one channel) of ||ω_L^{1/2}(y − SKx)||² + ||(ω_H + λ)^{1/2}(x − x̄)||².

    Solves (Kᵀ Sᵀ diag(ω_L) S K + diag(Λ)) x = Kᵀ Sᵀ (ω_L ⊙ y) + Λ ⊙ x̄ with Λ = ω_H + λ, densely in float64.

    Args:
        y2d: h×w low-res map. kernel2d: κ×κ. lam: scalar λ > 0. w_low2d: h×w (ω_L ≥ 0), or a scalar.
        w_high2d: H×W (ω_H ≥ 0), or a scalar. s: scale. prior2d: H×W prior x̄. shift: see module docstring.
    Returns:
        H×W float64: a torch tensor if ``y2d`` is a torch tensor, else a numpy array.
    """
    y = _np(y2d)
    h, w = y.shape
    H, W = s * h, s * w
    wl = np.broadcast_to(_np(w_low2d), (h, w)).reshape(-1)
    wh = np.broadcast_to(_np(w_high2d), (H, W)).reshape(-1)
    prior = _np(prior2d).reshape(-1)
    K = kernel_matrix(kernel2d, H, W, shift)
    S = decimation_matrix(h, w, s)
    SK = S @ K
    Lam = wh + float(lam)
    A = SK.T @ (wl[:, None] * SK) + np.diag(Lam)
    rhs = SK.T @ (wl * y.reshape(-1)) + Lam * prior
    x = np.linalg.solve(A, rhs).reshape(H, W)
    if isinstance(y2d, torch.Tensor):
        return torch.from_numpy(x)
    return x


def dense_objective(x2d, y2d, kernel2d, lam: float, w_low2d, w_high2d, s: int, prior2d, shift) -> float:
    """Value of the weighted objective (*) at x (one channel), float64."""
    x = _np(x2d).reshape(-1)
    y = _np(y2d)
    h, w = y.shape
    H, W = s * h, s * w
    wl = np.broadcast_to(_np(w_low2d), (h, w)).reshape(-1)
    wh = np.broadcast_to(_np(w_high2d), (H, W)).reshape(-1)
    SK = decimation_matrix(h, w, s) @ kernel_matrix(kernel2d, H, W, shift)
    res = y.reshape(-1) - SK @ x
    dev = x - _np(prior2d).reshape(-1)
    return float(np.sum(wl * res**2) + np.sum((wh + float(lam)) * dev**2))


def bilinear_prior(y: torch.Tensor, s: int) -> torch.Tensor:
    """The default prior x̄: bilinear upsampling by s with align_corners=True (identity for s = 1)."""
    if s == 1:
        return y.clone()
    return F.interpolate(y, scale_factor=s, mode="bilinear", align_corners=True)


def spec_transcription(
    y, kernel, lam, w_low, w_high, s: int, prior=None, shift="reference", min_denominator=None
) -> torch.Tensor:
    """The authors' WRC closed form, transcribed with full complex FFTs (batched, no cleverness).

        R  = conj(F_k)·FFT(Sᵀ(ω_L ⊙ y)) + FFT(Λ ⊙ x̄),   Λ = ω_H + λ
        D  = ω_L ⊙ ↓avg(|F_k|²) + ↓avg(ω_H) + λ
        X̂  = ( R − conj(F_k)·↑rep[ ω_L ⊙ ↓avg(F_k·R) / D ] ) / Λ
        x̂  = real(IFFT(X̂))                         (uncropped)

    Args:
        y: B×C×h×w. kernel: C×κ×κ or 1×C×κ×κ. lam: float or tensor broadcastable to B×C×1×1.
        w_low: B×C×h×w (or broadcastable). w_high: B×C×H×W (or broadcastable). prior: B×C×H×W (default bilinear,
        align_corners=True). shift: see module docstring. min_denominator: if given, D is clamped to at least this
        (the authors' CUDA-extension safeguard).
    Returns:
        B×C×H×W real tensor in y's dtype (float32 or float64).
    """
    B, C, h, w = y.shape
    H, W = s * h, s * w
    if kernel.ndim == 4:
        kernel = kernel[0]
    kh, kw = kernel.shape[-2:]
    dh, dw = resolve_shift(shift, H, W, kh, kw)
    if prior is None:
        prior = bilinear_prior(y, s)
    lam = torch.as_tensor(lam, dtype=y.dtype, device=y.device)
    w_low = torch.as_tensor(w_low, dtype=y.dtype, device=y.device).expand(B, C, h, w)
    w_high = torch.as_tensor(w_high, dtype=y.dtype, device=y.device).expand(B, C, H, W)

    kmap = torch.zeros(C, H, W, dtype=y.dtype, device=y.device)
    kmap[:, :kh, :kw] = kernel
    Fk = torch.fft.fft2(torch.roll(kmap, shifts=(-dh, -dw), dims=(-2, -1)))

    def down_avg(Z):  # s×s blocks of size h×w, averaged
        return Z.reshape(*Z.shape[:-2], s, h, s, w).mean(dim=(-4, -2))

    def up_rep(Z):
        return Z.repeat(*([1] * (Z.ndim - 2)), s, s)

    sty = torch.zeros(B, C, H, W, dtype=y.dtype, device=y.device)
    sty[..., ::s, ::s] = w_low * y
    Lam = w_high + lam
    R = torch.conj(Fk) * torch.fft.fft2(sty) + torch.fft.fft2(Lam * prior)
    D = w_low * down_avg(Fk.abs() ** 2) + down_avg(w_high) + lam
    if min_denominator is not None:
        D = D.clamp_min(min_denominator)
    Q = w_low * down_avg(Fk * R) / D
    X = (R - torch.conj(Fk) * up_rep(Q)) / Lam
    return torch.fft.ifft2(X).real


def pad_indexed(x: torch.Tensor, p: int, mode: str) -> torch.Tensor:
    """Pad the last two axes by p with explicit index arithmetic (independent of F.pad).

    mode: "circular" (i mod n), "reflect" (mirror without repeating the edge), "replicate" (clamp), "zeros".
    """
    if p == 0:
        return x
    out = x
    for axis in (-2, -1):
        n = out.shape[axis]
        i = torch.arange(-p, n + p)
        if mode == "circular":
            idx = i % n
        elif mode == "reflect":
            idx = torch.where(i < 0, -i, torch.where(i >= n, 2 * (n - 1) - i, i))
        elif mode in ("replicate", "zeros"):
            idx = i.clamp(0, n - 1)
        else:
            raise ValueError(f"unknown padding mode {mode!r}")
        out = out.index_select(axis, idx.to(out.device))
        if mode == "zeros":
            keep = ((i >= 0) & (i < n)).to(out.dtype).to(out.device)
            out = out * (keep[:, None] if axis == -2 else keep)
    return out


def spec_layer(
    x, kernel, bias, conv_low, conv_high, s: int = 2, p: int = 2, padding_mode="circular", eps=1e-5,
    shift="reference", min_denominator=None, conv_clamp=None,
) -> torch.Tensor:
    """The authors' whole WRC layer around :func:`spec_transcription`: pad → weights → closed form → crop.

    x: B×C×h×w; kernel: 1×C×κ×κ or C×κ×κ; bias: C values; conv_low/conv_high: C×C×3×3 (zero padding 1, no bias).
    Returns B×C×(s·h)×(s·w).
    """
    C = x.shape[1]
    y = pad_indexed(x, p, padding_mode)

    def weight(z, wconv):
        c = F.conv2d(z, wconv, padding=1)
        if conv_clamp is not None:
            c = c.clamp(-conv_clamp, conv_clamp)
        return torch.log(1 + c**2)

    w_low = weight(y, conv_low)
    prior = bilinear_prior(y, s)
    w_high = weight(prior, conv_high)
    lam = F.softplus(bias.reshape(1, C, 1, 1)) + eps
    out = spec_transcription(y, kernel, lam, w_low, w_high, s, prior, shift, min_denominator)
    m = p * s
    return out[..., m : out.shape[-2] - m, m : out.shape[-1] - m]


# Alternative names mentioned in the task brief.
dense_conv_matrix = kernel_matrix
dense_decimation = decimation_matrix
dense_solve = dense_weighted_solve
