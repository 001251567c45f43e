"""Closed-form reverse convolutions (Li et al. 2026; the mathematics: docs/ALGORITHM.md), evaluated with real FFTs.

Per channel: y is an h×w low-res map (already padded, treated as periodic), s the integer scale, H×W = (s·h)×(s·w)
the high-res grid, k a κ×κ kernel, F its spectrum after a circular roll (see ``mode``), x̄ the prior, λ > 0.

* :func:`reverse_conv` — Converse2D: the exact minimiser of ||y − S K x||² + λ||x − x̄||².
* :func:`wrc_closed_form` — the WRC authors' closed form with weight maps ω_L (low-res) and ω_H (high-res):

      Λ = ω_H + λ,  R = conj(F)·FFT(Sᵀ(ω_L ⊙ y)) + FFT(Λ ⊙ x̄),  D = ω_L ⊙ ↓avg(|F|²) + ↓avg(ω_H) + λ
      out = real(IFFT( (R − conj(F)·↑rep[ω_L ⊙ ↓avg(F·R) / D]) / Λ ))

  The spatial maps ω_L, D and Λ multiply spectra index-wise, so the final spectrum is not Hermitian; the formula
  is exact for constant weights only (docs/ALGORITHM.md#the-authors-closed-form-wrc-reference says how far it is). It is
  reproduced as is, but evaluated on rfft2 half-planes. Write R = R_Λ + conj(F)·↑rep(Y) with R_Λ = FFT(Λ⊙x̄) and
  Y = FFT_lo(ω_L⊙y), A = ↓avg(F·R) = ↓avg(F·R_Λ) + ↓avg|F|²·Y, r = ω_L/D and G = 1/Λ. Then
  X̂ = G·(R_Λ − conj(F)·↑rep(u)) with u = A·r − Y, and since real(IFFT(X̂)) is the inverse FFT of the Hermitian
  part (X̂(k) + conj(X̂(−k)))/2, while R_Λ, F, A and Y are Hermitian,

      real(IFFT(X̂)) = irfft2( ½·[ G(k)·(R_Λ − conj(F)·↑rep(u)) + G(−k)·(R_Λ − conj(F)·↑rep(v)) ] ),
      v = A·r(−j) − Y.

  Cost: one rfft2/irfft2 pair of the high-res map, low-res FFTs and about ten element-wise passes; the backward
  is hand-written (:class:`_WRCSolve`) and checked against autograd through the plain transcription.

Shapes: y B×C×h×w; kernel C×κ×κ (or 1×C×κ×κ); lam broadcastable to B×C×1×1; ω_L B×C×h×w; ω_H and x̄ B×C×H×W.
Outputs B×C×H×W (uncropped). float32/float64 are computed as is; float16/bfloat16 in float32 and cast back.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_positive_int, check_tensor, checking_values
from ._spectral import alias_mean_half, block_mean_real, fold_half_columns, kernel_spectrum, rep_mul

__all__ = ["reverse_conv", "wrc_closed_form", "MODES_CLOSED_FORM", "kernel_shift", "bilinear_prior"]

MODES_CLOSED_FORM = ("reference", "aligned")
_SAFE_MIN_DENOMINATOR = 1e-3  # the authors' CUDA extension clamps the denominators D to at least this


def kernel_shift(mode: str, size: tuple[int, int], kernel_size: tuple[int, int]) -> tuple[int, int]:
    """Circular roll applied to the top-left-placed kernel: the WRC reference rolls by half the high-res map
    (shifting the data term by half the padded low-res map), "aligned" centres the kernel like Converse2D."""
    if mode == "reference":
        return size[0] // 2, size[1] // 2
    return kernel_size[0] // 2, kernel_size[1] // 2


def bilinear_prior(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Default prior x̄: bilinear upsampling of y by ``scale`` with align_corners=True (as the WRC reference)."""
    if scale == 1:
        return y
    return F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=True)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (float32, float16, bfloat16) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def no_autocast(device: torch.device):
    """Context disabling autocast on ``device`` (the FFT algebra needs full precision)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # device type without autocast support
        return contextlib.nullcontext()


def _kernel3d(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """C×κh×κw view of a C×κ×κ or 1×C×κ×κ kernel, with checks naming ``kernel``."""
    check_tensor(kernel, "kernel", (3, 4))
    if kernel.ndim == 4:
        if kernel.shape[0] != 1:
            raise ValueError(f"kernel must have shape (C, k, k) or (1, C, k, k), got {tuple(kernel.shape)}")
        kernel = kernel[0]
    if kernel.shape[0] != channels:
        raise ValueError(f"kernel must have {channels} channels (one per input channel), got shape {tuple(kernel.shape)}")
    if kernel.shape[-1] < 1 or kernel.shape[-2] < 1:
        raise ValueError(f"kernel size must be >= 1, got shape {tuple(kernel.shape)}")
    return kernel


def _check_solve_inputs(y, kernel, scale, prior):
    """Check y B×C×h×w, kernel (≤ high-res grid), scale, prior B×C×sh×sw or None → (C×κ×κ kernel, scale)."""
    check_tensor(y, "y", 4)
    scale = check_positive_int(scale, "scale")
    B, C, h, w = y.shape
    kernel = _kernel3d(kernel, C)
    H, W = scale * h, scale * w
    if kernel.shape[-2] > H or kernel.shape[-1] > W:
        raise ValueError(
            f"kernel of size {tuple(kernel.shape[-2:])} is larger than the high-res grid {(H, W)} (scale × padded input)"
        )
    if prior is not None:
        check_tensor(prior, "prior", 4)
        if tuple(prior.shape) != (B, C, H, W):
            raise ValueError(f"prior must have shape {(B, C, H, W)} (B×C×sh×sw), got {tuple(prior.shape)}")
    return kernel, scale


def _lam4d(lam, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    lam = torch.as_tensor(lam, dtype=dtype, device=like.device)
    target = (like.shape[0], like.shape[1], 1, 1)
    try:
        if tuple(torch.broadcast_shapes(lam.shape, target)) != target:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"lam must be broadcastable to {target}, got {tuple(lam.shape)}") from None
    if checking_values() and not bool((lam > 0).all()):
        raise ValueError("lam must be > 0 everywhere")
    while lam.ndim < 4:
        lam = lam.unsqueeze(0)
    return lam


def reverse_conv(y: torch.Tensor, kernel: torch.Tensor, lam, scale: int, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Converse2D closed form on an already padded, periodic low-res map.

    Minimises ||y − S K x||² + λ||x − x̄||² per channel, K = circular convolution with the kernel centred by a roll of
    −⌊κ/2⌋, S = s-fold decimation (phase 0):  X̂ = (R − conj(F)·↑rep[↓avg(F·R) / (↓avg|F|² + λ)]) / λ with
    R = conj(F)·FFT(Sᵀy) + λ·FFT(x̄). Every spectrum is Hermitian, so rfft2 half-planes suffice.

    Args:
        y: B×C×h×w float tensor.
        kernel: C×κ×κ or 1×C×κ×κ.
        lam: λ > 0, float or tensor broadcastable to B×C×1×1.
        scale: integer s ≥ 1.
        prior: x̄, B×C×(s·h)×(s·w); default bilinear (align_corners=True) upsampling of y.
    Returns:
        B×C×(s·h)×(s·w), uncropped, dtype of y.
    """
    kernel, scale = _check_solve_inputs(y, kernel, scale, prior)
    out_dtype = y.dtype
    dt = compute_dtype(y.dtype)
    with no_autocast(y.device):
        y = y.to(dt)
        kernel = kernel.to(dt)
        lam = _lam4d(lam, y, dt)
        prior = bilinear_prior(y, scale) if prior is None else prior.to(dt)
        out = _reverse_conv(y, kernel, lam, scale, prior)
    return out.to(out_dtype)


def _reverse_conv(y, kernel, lam, s, prior):
    """Unchecked core of :func:`reverse_conv` (one dtype, no autocast); lam B×C×1×1 or 1×C×1×1."""
    h, w = y.shape[-2:]
    H, W = s * h, s * w
    Fk = kernel_spectrum(kernel, (H, W), kernel_shift("aligned", (H, W), kernel.shape[-2:]))  # C×H×(W//2+1)
    P = alias_mean_half(Fk.real.square() + Fk.imag.square(), s, W)  # ↓avg|F|², real, C×h×w
    Y = torch.fft.fft2(y)  # FFT(Sᵀy) = ↑rep(Y)
    X_prior = _RFFT2.apply(prior)
    # R = conj(F)·↑rep(Y) + λ·X̄, so ↓avg(F·R) = P·Y + λ·↓avg(F·X̄) and
    # X̂ = R/λ − conj(F)·↑rep(↓avg(F·R) / (P + λ)) / λ = X̄ − conj(F)·↑rep(q)
    A = P * Y + lam * alias_mean_half(Fk * X_prior, s, W)
    q = (A / (P + lam) - Y) / lam
    return torch.fft.irfft2(X_prior - rep_mul(Fk.conj(), q, s, W), s=(H, W))


def wrc_closed_form(
    y: torch.Tensor,
    kernel: torch.Tensor,
    lam,
    weight_low: torch.Tensor,
    weight_high: torch.Tensor,
    scale: int,
    prior: torch.Tensor | None = None,
    mode: str = "reference",
    safeguards: bool = False,
) -> torch.Tensor:
    """The WRC authors' closed form with given weight maps (see the module docstring for the formula).

    Args:
        y: B×C×h×w float tensor (the padded low-res map).
        kernel: C×κ×κ or 1×C×κ×κ.
        lam: λ > 0, float or tensor broadcastable to B×C×1×1.
        weight_low: ω_L ≥ 0, B×C×h×w (broadcastable).
        weight_high: ω_H ≥ 0, B×C×(s·h)×(s·w) (broadcastable).
        scale: integer s ≥ 1.
        prior: x̄, B×C×(s·h)×(s·w); default bilinear (align_corners=True) upsampling of y.
        mode: "reference" rolls the kernel by (−⌊H/2⌋, −⌊W/2⌋) like the authors (data term shifted by half the
            map); "aligned" by −⌊κ/2⌋ (centred, like Converse2D).
        safeguards: clamp D to at least 1e-3 (the authors' CUDA extension).
    Returns:
        B×C×(s·h)×(s·w), uncropped, dtype of y.
    """
    check_choice(mode, "mode", MODES_CLOSED_FORM)
    kernel, scale = _check_solve_inputs(y, kernel, scale, prior)
    B, C, h, w = y.shape
    check_tensor(weight_low, "weight_low")
    check_tensor(weight_high, "weight_high")
    for name, wmap, shape in (("weight_low", weight_low, (B, C, h, w)), ("weight_high", weight_high, (B, C, scale * h, scale * w))):
        try:
            if torch.broadcast_shapes(wmap.shape, shape) != torch.Size(shape):
                raise RuntimeError
        except RuntimeError:
            raise ValueError(f"{name} must be broadcastable to {shape}, got {tuple(wmap.shape)}") from None
    out_dtype = y.dtype
    dt = compute_dtype(y.dtype)
    with no_autocast(y.device):
        y = y.to(dt)
        lam = _lam4d(lam, y, dt)
        prior = bilinear_prior(y, scale) if prior is None else prior.to(dt)
        kernel = kernel.to(dt)
        lam_total = weight_high.to(dt) + lam
        if lam_total.shape != (B, C, scale * h, scale * w):
            lam_total = lam_total.expand(B, C, scale * h, scale * w)
        shift = kernel_shift(mode, (scale * h, scale * w), kernel.shape[-2:])
        out = wrc_solve(y, kernel, weight_low.to(dt).expand(B, C, h, w), lam_total, scale, prior, shift, safeguards)
    return out.to(out_dtype)


def wrc_solve(y, kernel, w_low, lam_total, s: int, prior, shift: tuple[int, int], safeguards: bool) -> torch.Tensor:
    """Unchecked core of :func:`wrc_closed_form`: one dtype, full shapes, no autocast.

    Takes Λ = ω_H + λ (``lam_total``, B×C×H×W) instead of ω_H and λ: the formula only needs Λ, since
    ↓avg(ω_H) + λ = ↓avg(Λ). ``shift`` is the kernel roll (see :func:`kernel_shift`). The kernel spectrum F and
    P = ↓avg|F|² (no batch axis, cheap) go through autograd; the batched algebra has a hand-written backward.
    """
    H, W = s * y.shape[-2], s * y.shape[-1]
    Fk = kernel_spectrum(kernel, (H, W), shift)  # C×H×(W//2+1)
    P = alias_mean_half(Fk.real.square() + Fk.imag.square(), s, W)  # ↓avg|F|², C×h×w
    return _WRCSolve.apply(y, w_low, lam_total, prior, Fk, P, s, safeguards)


class _RFFT2(torch.autograd.Function):
    """torch.fft.rfft2 with a cheaper backward: the adjoint is an unnormalised irfft2 with the interior columns
    halved (torch's own backward zero-fills the missing half and runs a full complex FFT)."""

    @staticmethod
    def forward(ctx, x):
        ctx.size = tuple(x.shape[-2:])
        return torch.fft.rfft2(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        g = g.clone()
        g[..., _interior_cols(ctx.size[-1])] *= 0.5
        return torch.fft.irfft2(g, s=ctx.size, norm="forward")


def _flip(z: torch.Tensor) -> torch.Tensor:
    """z[−j mod h, −j mod w] on a full low-res grid (an involution, so also its own adjoint)."""
    return torch.roll(torch.flip(z, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


def _mirror_half(z: torch.Tensor) -> torch.Tensor:
    """z[..., −i mod H, −j mod W] for the half-plane columns j = 0 … W//2 of a full H×W map → (…, H, W//2+1).

    Built from flips of contiguous slices (columns 0, W−1, …, W−W//2; rows 0, H−1, …, 1): the same values as
    advanced indexing with the mirrored indices, about twice as fast on CPU."""
    W = z.shape[-1]
    Wh = W // 2 + 1
    cols = torch.cat([z[..., :1], z[..., W - Wh + 1:].flip(-1)], dim=-1)
    return torch.cat([cols[..., :1, :], cols[..., 1:, :].flip(-2)], dim=-2)


def _mirror_half_add_(z: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_mirror_half`, in place: z[..., −i, −j] += values[..., i, j] (one addend per element)."""
    W = z.shape[-1]
    Wh = values.shape[-1]
    rows = torch.cat([values[..., :1, :], values[..., 1:, :].flip(-2)], dim=-2)
    z[..., :1] += rows[..., :1]
    z[..., W - Wh + 1:] += rows[..., 1:].flip(-1)
    return z


def _block_dot(Fk: torch.Tensor, Z: torch.Tensor, s: int) -> torch.Tensor:
    """Σ over the s row blocks of F·Z: F (C×s·h×Wh), Z (B×C×s·h×Wh) → B×C×h×Wh, one pass over Z."""
    h = Z.shape[-2] // s
    F5 = Fk.reshape(*Fk.shape[:-2], s, h, Fk.shape[-1])
    Z5 = Z.reshape(*Z.shape[:-2], s, h, Z.shape[-1])
    acc = F5[..., 0, :, :] * Z5[..., 0, :, :]
    for block in range(1, s):
        acc.addcmul_(F5[..., block, :, :], Z5[..., block, :, :])
    return acc


def _sub_rep(R: torch.Tensor, Fc: torch.Tensor, q_cols: torch.Tensor, s: int) -> torch.Tensor:
    """R − Fc·↑rep(q) in one pass: R (B×C×s·h×Wh), Fc (C×s·h×Wh), q_cols (B×C×h×Wh, low-res by column)."""
    H, Wh = R.shape[-2:]
    h = H // s
    out = torch.addcmul(
        R.reshape(*R.shape[:-2], s, h, Wh), Fc.reshape(*Fc.shape[:-2], s, h, Wh), q_cols.unsqueeze(-3), value=-1
    )
    return out.reshape(R.shape)


def _fold_cols_adjoint(rows: torch.Tensor, w: int) -> torch.Tensor:
    """Adjoint of q ↦ q[..., k mod w] for the half-plane columns k = 0 … Wh−1: (…, h, Wh) → (…, h, w)."""
    Wh = rows.shape[-1]
    if Wh == w:
        return rows
    out = rows.new_zeros(*rows.shape[:-1], w)
    return out.index_add_(-1, torch.arange(Wh, device=rows.device) % w, rows)


def _interior_cols(W: int) -> slice:
    """Half-plane columns whose mirror −k lies outside the half-plane: 1 … (W−1)//2."""
    return slice(1, (W - 1) // 2 + 1)


class _WRCSolve(torch.autograd.Function):
    """Batched WRC closed form on rfft2 half-planes, with a hand-written vector-Jacobian product.

    With R = R_Λ + conj(F)·↑rep(Y) (R_Λ = FFT(Λ⊙x̄), Y = FFT_lo(ω_L⊙y)), A = ↓avg(F·R), r = ω_L/D and G = 1/Λ,
    the authors' spectrum is X̂ = G·(R_Λ − conj(F)·↑rep(u)) with u = A·r − Y. Its Hermitian part, whose inverse
    FFT is real(IFFT(X̂)), is

        ½ [ G(k)·(R_Λ − conj(F)·↑rep(u)) + G(−k)·(R_Λ − conj(F)·↑rep(v)) ],   v = A·r(−j) − Y,

    because R_Λ, F, A and Y are Hermitian: conj(X̂(−k)) = G(−k)·(R_Λ(k) − conj(F(k))·↑rep(v)(k)).

    Inputs: y, ω_L (B×C×h×w), Λ, x̄ (B×C×H×W), F (C×H×Wh complex), P = ↓avg|F|² (C×h×w), s, safeguards.
    Only R_Λ is kept at high resolution for the backward (plus the inputs); the rest is recomputed.
    """

    @staticmethod
    def forward(ctx, y, w_low, lam_total, prior, Fk, P, s, safeguards):
        h, w = y.shape[-2:]
        H, W = s * h, s * w
        Wh = W // 2 + 1
        cols = torch.arange(Wh, device=y.device) % w
        Y = torch.fft.fft2(w_low * y)
        R = torch.fft.rfft2(lam_total * prior)
        A = fold_half_columns(_block_dot(Fk, R, s), s, W).add_(P * Y)  # ↓avg(F·R)

        D = block_mean_real(lam_total, s).add_(w_low * P)  # ω_L·↓avg|F|² + ↓avg(ω_H) + λ
        keep = None
        if safeguards:
            keep = D >= _SAFE_MIN_DENOMINATOR
            D = D.clamp_min_(_SAFE_MIN_DENOMINATOR)
        r = w_low / D
        u = (A * r).sub_(Y)
        v = (A * _flip(r)).sub_(Y)

        G = lam_total.reciprocal().mul_(0.5)
        Fc = Fk.conj().resolve_conj()
        Z = _sub_rep(R, Fc, u.index_select(-1, cols), s).mul_(G[..., :Wh])
        Z.addcmul_(_sub_rep(R, Fc, v.index_select(-1, cols), s), _mirror_half(G))
        del G, Fc  # high-res temporaries: free them before the inverse FFT's own buffers
        out = torch.fft.irfft2(Z, s=(H, W))
        del Z

        ctx.s, ctx.keep = s, keep
        ctx.save_for_backward(y, w_low, lam_total, prior, Fk, P, R, Y, A, D, r, u, v)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out):
        y, w_low, lam_total, prior, Fk, P, R, Y, A, D, r, u, v = ctx.saved_tensors
        s = ctx.s
        h, w = y.shape[-2:]
        H, W = s * h, s * w
        Wh = W // 2 + 1
        batch_dims = tuple(range(g_out.ndim - 3))  # F and P have no batch axis
        interior = _interior_cols(W)
        cols = torch.arange(Wh, device=y.device) % w

        # out = irfft2(Z): Z ↦ Re Σ_half c·Z·e^{iθ}/(HW), c = 2 on interior columns, 1 on the self-mirrored ones
        col_weight = torch.full((Wh,), 1.0 / (H * W), dtype=g_out.dtype, device=g_out.device)
        col_weight[interior] *= 2
        gZ = torch.fft.rfft2(g_out).mul_(col_weight)

        # Z = G_h·X1 + G_m·X2 (G = ½/Λ),  X1 = R_Λ − conj(F)·↑u,  X2 = R_Λ − conj(F)·↑v
        G = lam_total.reciprocal().mul_(0.5)
        Fc = Fk.conj().resolve_conj()
        u_cols, v_cols = u.index_select(-1, cols), v.index_select(-1, cols)
        g_Gh = (_sub_rep(R, Fc, u_cols, s).conj_physical_().mul_(gZ)).real
        g_Gm = (_sub_rep(R, Fc, v_cols, s).conj_physical_().mul_(gZ)).real
        gX1 = gZ * G[..., :Wh]
        gX2 = gZ.mul_(_mirror_half(G))
        del gZ
        gR = gX1 + gX2
        # d(conj F) terms: gF = −Σ_batch conj(gX1)·↑u + conj(gX2)·↑v;  gu = −↑ᵀ(F·gX1), gv = −↑ᵀ(F·gX2)
        t = _rows_mul(gX1.conj(), u_cols, s).add_(_rows_mul(gX2.conj(), v_cols, s))
        gFk = t.sum(dim=batch_dims).neg_() if batch_dims else t.neg_()
        del t
        gu = _fold_cols_adjoint(_block_dot(Fk, gX1, s), w).neg_()
        gv = _fold_cols_adjoint(_block_dot(Fk, gX2, s), w).neg_()
        del gX1, gX2

        # G = ½/Λ read at k (first Wh columns) and at −k
        gG = torch.zeros_like(G)
        gG[..., :Wh] = g_Gh
        _mirror_half_add_(gG, g_Gm)
        del g_Gh, g_Gm
        gLam = gG.mul_(G).mul_(G).mul_(-2.0)  # d(½/Λ) = −2·G²·dΛ
        del G

        # u = A·r − Y,  v = A·r(−j) − Y
        r_flip = _flip(r)
        gA = gu * r + gv * r_flip
        g_r = (gu * A.conj()).real + _flip((gv * A.conj()).real)
        gY = -(gu + gv)
        # r = ω_L / D,  D = ω_L·P + ↓avg(Λ)
        g_wlow = g_r / D
        gD = -(g_r * r / D)
        if ctx.keep is not None:
            gD = gD * ctx.keep
        g_wlow += gD * P
        gP = (gD * w_low).sum(dim=batch_dims)
        gLam.view(*gLam.shape[:-2], s, h, s, w).add_((gD / (s * s)).unsqueeze(-2).unsqueeze(-4))

        # A = ↓avg(F·R_Λ) + P·Y; the adjoint of ↓avg on a half-plane: ĝ[k mod] + conj(ĝ[−k mod]) on interior columns
        gP = gP + (gA * Y.conj()).real.sum(dim=batch_dims)
        gY += gA * P
        gM_cols = gA.index_select(-1, cols)
        gM_cols[..., interior] += _flip(gA).conj().index_select(-1, cols)[..., interior]
        gM_cols /= s * s
        gFk += _rows_mul(R.conj(), gM_cols, s).sum(dim=batch_dims)
        gR += _rows_mul(Fc, gM_cols, s)

        # R_Λ = rfft2(Λ·x̄): adjoint is irfft2 (unnormalised) with interior columns halved
        gv_map = torch.fft.irfft2(gR.mul_(col_weight.reciprocal_().mul_(1.0 / (H * W))), s=(H, W), norm="forward")
        del gR
        gLam += gv_map * prior
        g_prior = gv_map.mul_(lam_total)
        # Y = FFT_lo(ω_L·y)
        gu_map = torch.fft.ifft2(gY, norm="forward").real
        g_wlow += gu_map * y
        g_y = gu_map.mul_(w_low)
        return g_y, g_wlow, gLam, g_prior, gFk, gP, None, None


def _rows_mul(z_half: torch.Tensor, q_cols: torch.Tensor, s: int) -> torch.Tensor:
    """z_half (…, s·h, Wh) times q_cols (…, h, Wh) repeated over the s row blocks (broadcast, not tiled)."""
    H, Wh = z_half.shape[-2:]
    h = H // s
    lead = torch.broadcast_shapes(z_half.shape[:-2], q_cols.shape[:-2])
    return (z_half.reshape(*z_half.shape[:-2], s, h, Wh) * q_cols.unsqueeze(-3)).reshape(*lead, H, Wh)
