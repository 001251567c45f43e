"""The closed-form solves of :mod:`wrcup.ops.closed_form` with the DFT as real matrix products.

ONNX has no complex tensors, so the exporter cannot translate the complex spectra of the FFT path. Here every
spectrum is a pair of real tensors (real part, imaginary part) on the FULL frequency grid, and each 2-D DFT is two
matrix products with cos/sin matrices built from the (possibly symbolic) grid size: MatMul, Cos and Sin export to
any ONNX runtime, for any input size. The formulas are those of closed_form.py written without the half-plane
bookkeeping (the authors' closed form, spectra multiplied index-wise by spatial maps):

    Converse2D:  A = P·Y + λ·↓avg(F·X̄),  q = (A / (P + λ) − Y) / λ,  out = x̄ − Re IDFT(conj(F)·↑rep(q))
    WRC:         A = P·Y + ↓avg(F·R_Λ),  D = ω_L·P + ↓avg(Λ),  u = A·ω_L/D − Y,
                 out = Re IDFT( (R_Λ − conj(F)·↑rep(u)) / Λ )

with F the kernel spectrum, P = ↓avg|F|², Y = DFT_lo(ω_L ⊙ y) (Converse2D: ω_L = 1), R_Λ = DFT(Λ ⊙ x̄) and
X̄ = DFT(x̄). Used while ``torch.onnx.export`` traces a model and inside :func:`matmul_dft` (tests); the FFT path
stays the default, being cheaper (see docs/BENCHMARKS.md). Forward only in intent, though autograd works.
The phases are reduced modulo the grid size on exact integer products, so they stay exact in float32 for grids up
to 4096 per side.
"""
from __future__ import annotations

import contextlib
import math

import torch

from ._spectral import block_mean_real

__all__ = ["matmul_dft", "use_matmul_dft", "reverse_conv", "wrc_solve"]

_forced = False


@contextlib.contextmanager
def matmul_dft(enabled: bool = True):
    """Within this context the closed-form layers use the matrix-product DFT (as during ONNX export)."""
    global _forced
    previous, _forced = _forced, enabled
    try:
        yield
    finally:
        _forced = previous


def use_matmul_dft() -> bool:
    """True while torch.onnx.export traces a model or inside :func:`matmul_dft`."""
    return _forced or torch.onnx.is_in_onnx_export()


def _cos_sin(n, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """n×n matrices cos(2π·jk/n) and sin(2π·jk/n) (symmetric), dtype and device of ``like``."""
    k = torch.arange(n, device=like.device, dtype=like.dtype)
    phase = torch.remainder(k[:, None] * k[None, :], n) * (2 * math.pi) / n
    return torch.cos(phase), torch.sin(phase)


class _Grid:
    """The DFT matrices of an H×W grid: DFT2(z) = E_H z E_W with E = C − iS (C, S symmetric)."""

    def __init__(self, height, width, like: torch.Tensor):
        self.ch, self.sh = _cos_sin(height, like)
        self.cw, self.sw = _cos_sin(width, like)
        self.size = height * width

    def _rows(self, m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """m · z along the rows (m symmetric): (…, H, W)."""
        return torch.matmul(m, z)

    def dft_real(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DFT2 of a real map (…, H, W) → (real, imaginary) parts on the full grid."""
        a, b = x @ self.cw, x @ self.sw  # x E_W = a − i b
        # E_H (a − i b) = (C a − S b) − i (C b + S a)
        re = self._rows(self.ch, a) - self._rows(self.sh, b)
        im = -(self._rows(self.ch, b) + self._rows(self.sh, a))
        return re, im

    def idft_real_part(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """Re IDFT2(re + i·im) = Re(Ē_H z Ē_W) / (H·W), Ē = C + iS."""
        a = re @ self.cw - im @ self.sw  # z Ē_W = a + i b
        b = im @ self.cw + re @ self.sw
        return (self._rows(self.ch, a) - self._rows(self.sh, b)) / self.size


def kernel_spectrum_pair(kernel: torch.Tensor, size, shift) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-grid spectrum of the kernel placed top-left and rolled by ``-shift``: (real, imag), each C×H×W.

    The same values as ``_spectral.kernel_spectrum`` (a separable DFT over the κ taps), without complex dtypes.
    """
    H, W = size
    kh, kw = kernel.shape[-2:]
    rows = torch.arange(H, device=kernel.device, dtype=kernel.dtype)
    cols = torch.arange(W, device=kernel.device, dtype=kernel.dtype)
    taps_h = torch.arange(kh, device=kernel.device, dtype=kernel.dtype) - shift[0]
    taps_w = torch.arange(kw, device=kernel.device, dtype=kernel.dtype) - shift[1]
    phase_h = torch.remainder(rows[:, None] * taps_h[None, :], H) * (2 * math.pi) / H  # H×κh
    phase_w = torch.remainder(cols[:, None] * taps_w[None, :], W) * (2 * math.pi) / W  # W×κw
    ch, sh = torch.cos(phase_h), torch.sin(phase_h)
    cw, sw = torch.cos(phase_w), torch.sin(phase_w)
    # F = Σ_ab k_ab (ch − i·sh)_ia (cw − i·sw)_jb
    rows_c, rows_s = torch.matmul(ch, kernel), torch.matmul(sh, kernel)  # C×H×κw
    re = rows_c @ cw.mT - rows_s @ sw.mT
    im = -(rows_c @ sw.mT + rows_s @ cw.mT)
    return re, im


def _alias_mean(z: torch.Tensor, s: int) -> torch.Tensor:
    """↓avg on the full grid: the mean of the s² aliases z[k + (h·a, w·b)], (…, s·h, s·w) → (…, h, w)."""
    return block_mean_real(z, s)


def _tile(z: torch.Tensor, s: int) -> torch.Tensor:
    """↑rep: (…, h, w) → (…, s·h, s·w) with value z[k mod h, k mod w]."""
    return z.repeat(*([1] * (z.ndim - 2)), s, s)


def _conj_f_times_rep(fr, fi, qr, qi, s: int):
    """conj(F)·↑rep(q) as (real, imag)."""
    qr, qi = _tile(qr, s), _tile(qi, s)
    return fr * qr + fi * qi, fr * qi - fi * qr


def reverse_conv(y: torch.Tensor, kernel: torch.Tensor, lam: torch.Tensor, s: int, prior: torch.Tensor,
                 shift) -> torch.Tensor:
    """Converse2D closed form (the unchecked ``closed_form._reverse_conv``): y B×C×h×w, kernel C×κ×κ, lam
    B×C×1×1 or 1×C×1×1, prior B×C×(s·h)×(s·w) → B×C×(s·h)×(s·w); ``shift`` the kernel roll."""
    h, w = y.shape[-2:]
    H, W = s * h, s * w
    fr, fi = kernel_spectrum_pair(kernel, (H, W), shift)
    power = _alias_mean(fr * fr + fi * fi, s)  # P = ↓avg|F|², C×h×w
    yr, yi = _Grid(h, w, y).dft_real(y)
    high = _Grid(H, W, y)
    xr, xi = high.dft_real(prior)
    ar = power * yr + lam * _alias_mean(fr * xr - fi * xi, s)
    ai = power * yi + lam * _alias_mean(fr * xi + fi * xr, s)
    denom = power + lam
    qr, qi = (ar / denom - yr) / lam, (ai / denom - yi) / lam
    cr, ci = _conj_f_times_rep(fr, fi, qr, qi, s)
    return prior - high.idft_real_part(cr, ci)


def wrc_solve(y, kernel, w_low, lam_total, s: int, prior, shift, safeguards: bool, min_denominator: float):
    """The WRC authors' closed form (the unchecked ``closed_form.wrc_solve``): y, ω_L B×C×h×w; Λ = ω_H + λ and
    x̄ B×C×(s·h)×(s·w); kernel C×κ×κ → B×C×(s·h)×(s·w). ``safeguards`` clamps D to ≥ ``min_denominator``."""
    h, w = y.shape[-2:]
    H, W = s * h, s * w
    fr, fi = kernel_spectrum_pair(kernel, (H, W), shift)
    power = _alias_mean(fr * fr + fi * fi, s)
    yr, yi = _Grid(h, w, y).dft_real(w_low * y)
    high = _Grid(H, W, y)
    rr, ri = high.dft_real(lam_total * prior)
    ar = power * yr + _alias_mean(fr * rr - fi * ri, s)
    ai = power * yi + _alias_mean(fr * ri + fi * rr, s)
    denom = block_mean_real(lam_total, s) + w_low * power
    if safeguards:
        denom = denom.clamp_min(min_denominator)
    ratio = w_low / denom
    cr, ci = _conj_f_times_rep(fr, fi, ar * ratio - yr, ai * ratio - yi, s)
    return high.idft_real_part((rr - cr) / lam_total, (ri - ci) / lam_total)
