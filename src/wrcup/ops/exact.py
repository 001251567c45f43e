"""Exact solution of the weighted reverse-convolution problem: the true minimiser that the
closed forms approximate (the mathematics: docs/ALGORITHM.md#the-exact-solver-wrc-exact).

Per batch element b and channel c, on the periodic high-res grid H×W = (s·h)×(s·w)::

    min_x || ω_L^{1/2} ⊙ (y − S K x) ||² + || Λ^{1/2} ⊙ (x − x̄) ||²,      Λ = ω_H + λ,

i.e. the symmetric positive definite normal equations ``M x = rhs`` with

    M   = Kᵀ Sᵀ diag(ω_L) S K + diag(Λ),
    rhs = Kᵀ Sᵀ (ω_L ⊙ y) + Λ ⊙ x̄.

K is the circular convolution with the kernel centred as in Converse2D (roll by κ//2), S keeps pixel
(s·i, s·j) and Sᵀ inserts zeros. The reference WRC closed form multiplies spatial weights onto spectra and is
exact only for constant weights; here the system is solved by preconditioned conjugate gradients (PCG), with the
constant-weight closed form at the per-system mean weights as the preconditioner (exact when the weights are
constant: the initial guess is then already the solution). Gradients come from implicit differentiation: one adjoint
solve ``M u = grad_out`` and the vector-Jacobian product of the residual ``rhs(θ) − M(θ) x*``; the PCG iterations
are never stored.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from numbers import Real

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_positive_int, check_tensor
from ._spectral import alias_mean_half, kernel_spectrum, tile_half

__all__ = ["wrc_exact_solve", "ExactSolveInfo", "DEFAULT_TOL"]

#: Default relative-residual tolerance ||r|| / ||rhs|| per system, by compute dtype. In float32 the true residual
#: stalls near 1e-7 (FFT rounding; measured 1.3e-7 on 8×72×72 random problems), so 1e-5 leaves margin; float64
#: reaches 1e-10 in roughly twice the iterations of 1e-5.
DEFAULT_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DEFAULT_MAX_ITER = 100


@dataclass
class ExactSolveInfo:
    """Diagnostics of one :func:`wrc_exact_solve` call.

    Attributes:
        iterations: PCG steps taken by the slowest (b, c) system in the forward solve.
        iterations_per_system: B×C int64 tensor, PCG steps per system (a system is frozen once converged).
        residual: max over systems of the true relative residual ||rhs − M x|| / ||rhs|| at exit.
        converged: whether every system reached ``tol``.
        tol, max_iter: the settings used.
        adjoint_iterations, adjoint_residual, adjoint_converged: the same for the adjoint solve of the backward
            pass; ``None`` until a backward pass has run.
    """

    iterations: int
    iterations_per_system: torch.Tensor
    residual: float
    converged: bool
    tol: float
    max_iter: int
    adjoint_iterations: int | None = None
    adjoint_residual: float | None = None
    adjoint_converged: bool | None = None


# --------------------------------------------------------------------------------------------- operators
class _NormalOperator:
    """M = Kᵀ Sᵀ diag(ω_L) S K + diag(Λ) for a batch of B×C independent systems, plus its preconditioner.

    Tensors (compute dtype, complex spectra as rfft2 half-planes):
        spectrum: C×H×(W//2+1), kernel spectrum F.
        weight_low: B×C×h×w, ω_L.   lam_total: B×C×H×W, Λ = ω_H + λ.

    The ``*_hat`` variants take or return the rfft2 half-plane alongside the map, so that a PCG step needs three
    high-res FFTs instead of six: S is applied spectrally (FFT_lo(S z) = ↓avg(FFT z), ``alias_mean_half``) and
    Sᵀ by tiling (FFT(Sᵀ q) = ↑rep(FFT_lo q), ``tile_half``), leaving only low-res FFTs around the ω_L product.
    """

    def __init__(self, spectrum: torch.Tensor, weight_low: torch.Tensor, lam_total: torch.Tensor, scale: int):
        self.spectrum = spectrum
        self.weight_low = weight_low
        self.lam_total = lam_total
        self.scale = scale
        self.size = tuple(lam_total.shape[-2:])
        self._precond_ready = False

    def _low_spectrum(self, x_hat: torch.Tensor) -> torch.Tensor:
        """Full low-res spectrum of S K x from x's half-plane."""
        return alias_mean_half(self.spectrum * x_hat, self.scale, self.size[1])

    # Kᵀ Sᵀ q: low-res → high-res.
    def adjoint_op(self, q: torch.Tensor) -> torch.Tensor:
        q_hat = tile_half(torch.fft.fft2(q), self.scale, self.size[1])
        return torch.fft.irfft2(self.spectrum.conj() * q_hat, s=self.size)

    def apply_hat(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """M x, given x and rfft2(x)."""
        low = torch.fft.ifft2(self._low_spectrum(x_hat)).real  # S K x
        return self.adjoint_op(self.weight_low * low) + self.lam_total * x

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_hat(x, torch.fft.rfft2(x))

    def _prepare_precond(self) -> None:
        power = alias_mean_half(self.spectrum.abs().square(), self.scale, self.size[1])  # P = ↓avg(|F|²), C×h×w
        self.mean_low = self.weight_low.mean(dim=(-2, -1), keepdim=True)  # ω̄_L, B×C×1×1
        self.mean_lam = self.lam_total.mean(dim=(-2, -1), keepdim=True)  # Λ̄ > 0, B×C×1×1
        self.precond_gain = self.mean_low / (self.mean_lam + self.mean_low * power)
        self._precond_ready = True

    def precond_hat(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M̄⁻¹ v, its half-plane) for M̄ = ω̄_L Kᵀ Sᵀ S K + Λ̄ I.

        Woodbury: M̄⁻¹ = (1/Λ̄)[I − ω̄_L Kᵀ Sᵀ (Λ̄ + ω̄_L S K Kᵀ Sᵀ)⁻¹ S K], and S K Kᵀ Sᵀ is diagonal (P) in low-res
        Fourier, so the whole inverse is two high-res FFTs.
        """
        if not self._precond_ready:
            self._prepare_precond()
        v_hat = torch.fft.rfft2(v)
        q_hat = self._low_spectrum(v_hat) * self.precond_gain
        z_hat = (v_hat - self.spectrum.conj() * tile_half(q_hat, self.scale, self.size[1])) / self.mean_lam
        return torch.fft.irfft2(z_hat, s=self.size), z_hat


def _rhs(op: _NormalOperator, y: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    return op.adjoint_op(op.weight_low * y) + op.lam_total * prior


def _build_operator(kernel, lam, weight_low, weight_high, scale) -> _NormalOperator:
    H, W = weight_high.shape[-2:]
    kh, kw = kernel.shape[-2:]
    spectrum = kernel_spectrum(kernel, (H, W), (kh // 2, kw // 2))
    return _NormalOperator(spectrum, weight_low, weight_high + lam, scale)


def _norm(z: torch.Tensor) -> torch.Tensor:
    return z.square().sum(dim=(-2, -1), keepdim=True).sqrt()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=(-2, -1), keepdim=True)


def _pcg(op: _NormalOperator, rhs: torch.Tensor, tol: float, max_iter: int):
    """Batched PCG on B×C independent systems; each has its own α, β.

    A system is frozen (α = β = 0) as soon as its recursive residual reaches ``tol``. When all are frozen the true
    residual is recomputed; systems whose true residual still exceeds ``tol`` (recursion drift) are restarted from
    it, within the same ``max_iter`` budget. Initial guess: the preconditioner applied to ``rhs``.

    Returns (x, iterations_per_system B×C×1×1 int64, true relative residual B×C×1×1, steps taken).
    """
    rhs_norm = _norm(rhs)
    x, x_hat = op.precond_hat(rhs)
    r = rhs - op.apply_hat(x, x_hat)
    # ||r|| ≤ tol·||rhs|| (not <): a zero right-hand side is solved by x = 0 at once.
    active = _norm(r) > tol * rhs_norm
    iters = torch.zeros_like(rhs_norm, dtype=torch.int64)
    step = 0
    while True:
        z, z_hat = op.precond_hat(r)
        p, p_hat = z, z_hat  # p's half-plane is carried along (p is a linear combination of z's)
        rz = _dot(r, z)
        while step < max_iter and bool(active.any()):
            q = op.apply_hat(p, p_hat)
            pq = _dot(p, q)
            # Frozen systems get α = β = 0; the inner where keeps their (possibly zero) denominators out.
            alpha = torch.where(active, rz / torch.where(active, pq, torch.ones_like(pq)), torch.zeros_like(pq))
            x = x + alpha * p
            r = r - alpha * q
            iters += active.to(torch.int64)
            step += 1
            done = _norm(r) <= tol * rhs_norm
            z, z_hat = op.precond_hat(r)
            rz_new = _dot(r, z)
            beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)), torch.zeros_like(rz))
            p = z + beta * p
            p_hat = z_hat + beta * p_hat
            rz = rz_new
            active = active & ~done
        r = rhs - op.apply(x)
        rel = _norm(r) / rhs_norm.clamp_min(torch.finfo(rhs.dtype).tiny)
        rel = torch.where(rhs_norm > 0, rel, _norm(r))
        stale = rel > tol
        if step >= max_iter or not bool(stale.any()):
            return x, iters, rel, step
        active = stale


def _warn_unconverged(what: str, rel: torch.Tensor, tol: float, max_iter: int, stacklevel: int) -> None:
    n_bad = int((rel > tol).sum())
    warnings.warn(
        f"wrc_exact_solve: {what} PCG did not converge in max_iter={max_iter} iterations: "
        f"max relative residual {float(rel.max()):.3e} > tol {tol:.1e} in {n_bad} of {rel.numel()} systems",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


# ------------------------------------------------------------------------------------- autograd function
@dataclass
class _SolveSettings:
    scale: int
    tol: float
    max_iter: int
    info: ExactSolveInfo | None = field(default=None)


class _ExactSolve(torch.autograd.Function):
    """x* = M(θ)⁻¹ rhs(θ), θ = (y, kernel, lam, ω_L, ω_H, x̄); all tensors already validated, same dtype/device,
    kernel C×κh×κw and lam B×C×1×1."""

    @staticmethod
    def forward(ctx, y, kernel, lam, weight_low, weight_high, prior, settings: _SolveSettings):
        op = _build_operator(kernel, lam, weight_low, weight_high, settings.scale)
        x, iters, rel, _ = _pcg(op, _rhs(op, y, prior), settings.tol, settings.max_iter)
        converged = bool((rel <= settings.tol).all())
        if not converged:
            # stacklevel 4: _warn_unconverged → forward → wrc_exact_solve (apply adds no Python frame) → the caller.
            _warn_unconverged("forward", rel, settings.tol, settings.max_iter, stacklevel=4)
        settings.info = ExactSolveInfo(
            iterations=int(iters.max()) if iters.numel() else 0,
            iterations_per_system=iters.reshape(iters.shape[:2]),
            residual=float(rel.max()) if rel.numel() else 0.0,
            converged=converged,
            tol=settings.tol,
            max_iter=settings.max_iter,
        )
        ctx.settings = settings
        ctx.save_for_backward(x, y, kernel, lam, weight_low, weight_high, prior)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, *inputs = ctx.saved_tensors
        settings: _SolveSettings = ctx.settings
        needs = ctx.needs_input_grad[:6]
        y, kernel, lam, weight_low, weight_high, prior = inputs
        grad_out = grad_out.to(x.dtype)

        # Adjoint solve M u = grad_out (M is symmetric).
        op = _build_operator(kernel, lam, weight_low, weight_high, settings.scale)
        u, iters, rel, _ = _pcg(op, grad_out, settings.tol, settings.max_iter)
        converged = bool((rel <= settings.tol).all())
        if not converged:
            _warn_unconverged("adjoint (backward)", rel, settings.tol, settings.max_iter, stacklevel=2)
        if settings.info is not None:
            settings.info.adjoint_iterations = int(iters.max()) if iters.numel() else 0
            settings.info.adjoint_residual = float(rel.max()) if rel.numel() else 0.0
            settings.info.adjoint_converged = converged

        # dL/dθ = uᵀ ∂x*/∂θ = uᵀ M⁻¹ ∂(rhs − M x)/∂θ|_{x = x*}: a VJP of the residual with x* held fixed.
        leaves = [t.detach().requires_grad_(need) for t, need in zip(inputs, needs)]
        with torch.enable_grad():
            op = _build_operator(leaves[1], leaves[2], leaves[3], leaves[4], settings.scale)
            residual = _rhs(op, leaves[0], leaves[5]) - op.apply(x)
            wanted = [t for t, need in zip(leaves, needs) if need]
            grads = torch.autograd.grad(residual, wanted, grad_outputs=u, allow_unused=True)
        grads = iter(grads)
        out = []
        for t, need in zip(leaves, needs):
            g = next(grads) if need else None
            if need and g is None:
                g = torch.zeros_like(t)
            out.append(g)
        return (*out, None)


# ------------------------------------------------------------------------------------------- public API
def _check_values(y, kernel, lam, weight_low, weight_high, prior) -> None:
    check_finite(y, "y")
    check_finite(kernel, "kernel")
    check_finite(lam, "lam")
    check_finite(weight_low, "weight_low")
    check_finite(weight_high, "weight_high")
    if prior is not None:
        check_finite(prior, "prior")
    if bool((lam <= 0).any()):
        raise ValueError(f"lam must be > 0 everywhere, got min {float(lam.min()):.3g}")
    if bool((weight_low < 0).any()):
        raise ValueError(f"weight_low must be >= 0, got min {float(weight_low.min()):.3g}")
    if bool((weight_high < 0).any()):
        raise ValueError(f"weight_high must be >= 0, got min {float(weight_high.min()):.3g}")


def wrc_exact_solve(
    y: torch.Tensor,
    kernel: torch.Tensor,
    lam,
    weight_low: torch.Tensor,
    weight_high: torch.Tensor,
    scale: int,
    prior: torch.Tensor | None = None,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    return_info: bool = False,
    check_values: bool = True,
):
    """Exact minimiser of the weighted reverse-convolution objective E (docs/ALGORITHM.md#the-problem), per batch element and channel.

    Solves ``(Kᵀ Sᵀ diag(ω_L) S K + diag(Λ)) x = Kᵀ Sᵀ (ω_L ⊙ y) + Λ ⊙ x̄`` with ``Λ = ω_H + λ`` on the periodic
    high-res grid by batched PCG (preconditioner: the constant-weight closed form at the per-(b, c) means of ω_L
    and Λ). Differentiable in every tensor argument by implicit differentiation (one adjoint PCG solve).

    Args:
        y: B×C×h×w low-res map, already padded (treated as periodic).
        kernel: C×κh×κw (or 1×C×κh×κw) depthwise kernel; K is circular convolution with the kernel centred at
            (κh//2, κw//2) as in Converse2D, spectrum ``kernel_spectrum(kernel, (H, W), (κh//2, κw//2))``.
        lam: λ > 0, a number or a tensor broadcastable to B×C×1×1 (e.g. 1×C×1×1); its gradient has lam's shape.
        weight_low: B×C×h×w, ω_L ≥ 0.
        weight_high: B×C×H×W with H = s·h, W = s·w, ω_H ≥ 0.
        scale: integer s ≥ 1.
        prior: B×C×H×W, x̄; default: bilinear (align_corners=True) upsampling of y to H×W.
        tol: relative-residual tolerance ||rhs − M x|| / ||rhs|| per system; default 1e-5 when computing in float32,
            1e-10 in float64. The adjoint solve of the backward pass uses the same tolerance.
        max_iter: PCG iteration cap (default 100); if some system is not converged by then a RuntimeWarning names
            the achieved residual and the last iterate is returned.
        return_info: also return an :class:`ExactSolveInfo`.
        check_values: reject NaN/Inf inputs, negative weights and λ ≤ 0 (reads values on the host; the WRC layer
            passes False since its weights and λ are non-negative by construction).

    Not traceable by torch.compile(fullgraph=True) or torch.export: PCG stops when every system has converged, a
    data-dependent loop (one host-device synchronisation per iteration on GPUs). A fixed iteration count would
    unroll ``max_iter`` (100) iterations of three FFTs each into the graph and give up the convergence guarantee.

    Returns:
        x: B×C×H×W in the promoted dtype of the floating inputs. float16/bfloat16 are computed in float32 and cast
        back. With ``return_info``: ``(x, info)``.

    Raises:
        TypeError / ValueError naming the argument for wrong types, ranks, shapes, devices, scale < 1, negative or
        non-finite weights, lam ≤ 0, and NaN/Inf in y, kernel or prior.
    """
    check_tensor(y, "y", 4)
    check_tensor(kernel, "kernel", (3, 4))
    check_tensor(weight_low, "weight_low", 4)
    check_tensor(weight_high, "weight_high", 4)
    scale = check_positive_int(scale, "scale")
    if prior is not None:
        check_tensor(prior, "prior", 4)
    if isinstance(lam, torch.Tensor):
        check_tensor(lam, "lam")
    elif isinstance(lam, Real) and not isinstance(lam, bool):
        lam = torch.tensor(float(lam), dtype=y.dtype, device=y.device)
    else:
        raise TypeError(f"lam must be a positive number or a floating torch.Tensor, got {type(lam).__name__}")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, Real) or not tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    max_iter = DEFAULT_MAX_ITER if max_iter is None else check_positive_int(max_iter, "max_iter")

    B, C, h, w = y.shape
    H, W = scale * h, scale * w
    if kernel.ndim == 4:
        if kernel.shape[0] != 1:
            raise ValueError(f"kernel must be C×κ×κ or 1×C×κ×κ, got shape {tuple(kernel.shape)}")
        kernel = kernel[0]
    if kernel.shape[0] != C:
        raise ValueError(f"kernel must have C={C} channels (those of y), got shape {tuple(kernel.shape)}")
    if min(kernel.shape[-2:]) < 1:
        raise ValueError(f"kernel must have at least one tap per axis, got shape {tuple(kernel.shape)}")
    if tuple(weight_low.shape) != (B, C, h, w):
        raise ValueError(f"weight_low must have shape {(B, C, h, w)} (that of y), got {tuple(weight_low.shape)}")
    if tuple(weight_high.shape) != (B, C, H, W):
        raise ValueError(
            f"weight_high must have shape {(B, C, H, W)} (y's grid times scale={scale}), got {tuple(weight_high.shape)}"
        )
    if prior is not None and tuple(prior.shape) != (B, C, H, W):
        raise ValueError(f"prior must have shape {(B, C, H, W)} (y's grid times scale={scale}), got {tuple(prior.shape)}")
    try:
        lam_ok = torch.broadcast_shapes(lam.shape, (B, C, 1, 1)) == (B, C, 1, 1)
    except RuntimeError:
        lam_ok = False
    if not lam_ok:
        raise ValueError(f"lam must be broadcastable to B×C×1×1 = {(B, C, 1, 1)}, got shape {tuple(lam.shape)}")
    tensors = {"y": y, "kernel": kernel, "lam": lam, "weight_low": weight_low, "weight_high": weight_high}
    if prior is not None:
        tensors["prior"] = prior
    for name, t in tensors.items():
        if t.device != y.device:
            raise ValueError(f"{name} is on {t.device} but y is on {y.device}; all inputs must share a device")

    if check_values:
        _check_values(y, kernel, lam, weight_low, weight_high, prior)

    out_dtype = y.dtype
    for t in tensors.values():
        out_dtype = torch.promote_types(out_dtype, t.dtype)
    compute = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    if tol is None:
        tol = DEFAULT_TOL[compute]

    y_c = y.to(compute)
    if prior is None:
        prior_c = F.interpolate(y_c, size=(H, W), mode="bilinear", align_corners=True)
    else:
        prior_c = prior.to(compute)
    # Broadcasting lam by expand lets autograd sum its gradient back to lam's own shape.
    lam_c = lam.to(compute).reshape((1,) * (4 - lam.ndim) + tuple(lam.shape)).expand(B, C, 1, 1)

    settings = _SolveSettings(scale=scale, tol=float(tol), max_iter=max_iter)
    x = _ExactSolve.apply(
        y_c, kernel.to(compute), lam_c, weight_low.to(compute), weight_high.to(compute), prior_c, settings
    )
    x = x.to(out_dtype)
    if return_info:
        return x, settings.info
    return x
