"""wrcup.ops.exact.wrc_exact_solve against dense float64 solves of the normal equations.

The oracle here is written from the problem statement only (explicit circulant and decimation matrices,
torch.linalg.solve), independently of the FFT code under test.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from wrcup.ops.exact import ExactSolveInfo, wrc_exact_solve


# ------------------------------------------------------------------------------------------- dense oracle
def dense_conv_matrix(k: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(K x)[n] = Σ_{a,b} k[a,b] x[n1 − a + κh//2, n2 − b + κw//2] (periodic), as an (HW)×(HW) matrix.

    This is circular convolution with the kernel's tap (κh//2, κw//2) at the origin (Converse2D's centring).
    Built with differentiable index_put so gradients flow back to k.
    """
    kh, kw = k.shape
    rows, cols, vals = [], [], []
    for n1 in range(H):
        for n2 in range(W):
            for a in range(kh):
                for b in range(kw):
                    rows.append(n1 * W + n2)
                    cols.append(((n1 - a + kh // 2) % H) * W + (n2 - b + kw // 2) % W)
                    vals.append(k[a, b])
    K = torch.zeros(H * W, H * W, dtype=k.dtype)
    return K.index_put((torch.tensor(rows), torch.tensor(cols)), torch.stack(vals), accumulate=True)


def dense_decimation_matrix(h: int, w: int, s: int, dtype=torch.float64) -> torch.Tensor:
    """S: keeps pixel (s·i, s·j) of an (s·h)×(s·w) map; (hw)×(s²hw)."""
    S = torch.zeros(h * w, s * s * h * w, dtype=dtype)
    for i in range(h):
        for j in range(w):
            S[i * w + j, (s * i) * (s * w) + s * j] = 1.0
    return S


def dense_solve(y, kernel, lam, weight_low, weight_high, scale, prior):
    """x = M⁻¹ b per (b, c) with explicit matrices, float64, differentiable in all inputs."""
    B, C, h, w = y.shape
    H, W = scale * h, scale * w
    lam = torch.as_tensor(lam, dtype=torch.float64).expand(B, C, 1, 1) if not isinstance(lam, torch.Tensor) else lam
    lam = lam.expand(B, C, 1, 1)
    S = dense_decimation_matrix(h, w, scale)
    out = []
    for c in range(C):
        A = S @ dense_conv_matrix(kernel[c], H, W)  # S K
        for b in range(B):
            wl = weight_low[b, c].reshape(-1)
            lam_total = weight_high[b, c].reshape(-1) + lam[b, c, 0, 0]
            M = A.T @ (wl[:, None] * A) + torch.diag(lam_total)
            rhs = A.T @ (wl * y[b, c].reshape(-1)) + lam_total * prior[b, c].reshape(-1)
            out.append(torch.linalg.solve(M, rhs).reshape(H, W))
    return torch.stack(out).reshape(C, B, H, W).transpose(0, 1)


def bilinear_prior(y, scale):
    return F.interpolate(y, size=(scale * y.shape[-2], scale * y.shape[-1]), mode="bilinear", align_corners=True)


def random_problem(B, C, h, w, s, kappa, *, constant=False, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(B, C, h, w, generator=g, dtype=dtype)
    kernel = torch.softmax(torch.randn(C, kappa * kappa, generator=g, dtype=dtype), -1).reshape(C, kappa, kappa)
    lam = 0.1 + torch.rand(1, C, 1, 1, generator=g, dtype=dtype)
    if constant:
        weight_low = (0.5 + torch.rand(B, C, 1, 1, generator=g, dtype=dtype)).expand(B, C, h, w).clone()
        weight_high = (0.5 * torch.rand(B, C, 1, 1, generator=g, dtype=dtype)).expand(B, C, s * h, s * w).clone()
    else:
        weight_low = torch.log1p((3 * torch.randn(B, C, h, w, generator=g, dtype=dtype)) ** 2)
        weight_high = torch.log1p(torch.randn(B, C, s * h, s * w, generator=g, dtype=dtype) ** 2)
    prior = torch.randn(B, C, s * h, s * w, generator=g, dtype=dtype)
    return y, kernel, lam, weight_low, weight_high, prior


def max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------------------ values
# κ ≤ s makes ↓avg(|F|²) constant (one tap per polyphase component); κ > s exercises its frequency dependence.
@pytest.mark.parametrize("s,kappa", [(2, 2), (3, 3), (2, 1), (2, 3), (3, 4)])
def test_constant_weights_match_dense_solve(s, kappa, device):
    y, kernel, lam, wl, wh, _ = random_problem(2, 2, 3, 4, s, kappa, constant=True, seed=s + kappa)
    x, info = wrc_exact_solve(*(t.to(device) for t in (y, kernel, lam, wl, wh)), s, return_info=True)  # bilinear prior
    assert x.device.type == device.type
    x = x.cpu()
    ref = dense_solve(y, kernel, lam, wl, wh, s, bilinear_prior(y, s))
    assert x.shape == ref.shape == (2, 2, 3 * s, 4 * s)
    assert max_rel(x, ref) <= 1e-10
    # The preconditioner is the exact inverse for constant weights.
    assert isinstance(info, ExactSolveInfo)
    assert info.converged and info.iterations <= 2
    assert info.residual <= 1e-10


@pytest.mark.parametrize(
    "s,kappa,shape",
    [(2, 1, (3, 4)), (2, 2, (4, 3)), (2, 3, (3, 5)), (3, 1, (2, 3)), (3, 2, (3, 2)), (3, 3, (2, 4))],
)
def test_varying_weights_match_dense_solve(s, kappa, shape, device):
    h, w = shape
    y, kernel, lam, wl, wh, prior = random_problem(2, 3, h, w, s, kappa, seed=10 * s + kappa)
    x, info = wrc_exact_solve(*(t.to(device) for t in (y, kernel, lam, wl, wh)), s, prior.to(device), return_info=True)
    x = x.cpu()
    ref = dense_solve(y, kernel, lam, wl, wh, s, prior)
    assert max_rel(x, ref) <= 1e-8
    assert info.converged and info.residual <= 1e-10
    assert info.iterations_per_system.shape == (2, 3)


def test_kernel_is_centred_like_converse2d():
    # Delta at tap (κ//2, κ//2) → K = identity; with a dominant data weight the output samples y on S's grid.
    y = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    kernel = torch.zeros(1, 3, 3, dtype=torch.float64)
    kernel[0, 1, 1] = 1.0
    x = wrc_exact_solve(y, kernel, 1e-6, torch.full_like(y, 1e6), torch.zeros(1, 1, 8, 8, dtype=torch.float64), 2)
    assert torch.allclose(x[..., ::2, ::2], y, atol=1e-9)


def test_kernel_4d_and_lam_forms_agree():
    y, kernel, lam, wl, wh, prior = random_problem(2, 2, 3, 3, 2, 2, seed=5)
    ref = wrc_exact_solve(y, kernel, lam, wl, wh, 2, prior)
    assert torch.equal(wrc_exact_solve(y, kernel[None], lam, wl, wh, 2, prior), ref)
    assert torch.equal(wrc_exact_solve(y, kernel, lam.reshape(2, 1, 1), wl, wh, 2, prior), ref)
    scalar = wrc_exact_solve(y, kernel, 0.3, wl, wh, 2, prior)
    assert max_rel(scalar, dense_solve(y, kernel, torch.tensor(0.3, dtype=torch.float64), wl, wh, 2, prior)) <= 1e-8


def test_scale_one_matches_dense_solve():
    y, kernel, lam, wl, wh, prior = random_problem(1, 2, 4, 5, 1, 3, seed=7)
    x = wrc_exact_solve(y, kernel, lam, wl, wh, 1, prior)
    assert max_rel(x, dense_solve(y, kernel, lam, wl, wh, 1, prior)) <= 1e-8


def test_zero_rhs_gives_zero():
    y, kernel, lam, wl, wh, _ = random_problem(1, 2, 3, 3, 2, 2, seed=8)
    x, info = wrc_exact_solve(torch.zeros_like(y), kernel, lam, wl, wh, 2, return_info=True)
    assert torch.equal(x, torch.zeros_like(x)) and info.converged and info.iterations == 0


def test_float32_agrees_with_float64(device):
    y, kernel, lam, wl, wh, prior = random_problem(2, 4, 8, 6, 2, 2, seed=9)
    x64 = wrc_exact_solve(y, kernel, lam, wl, wh, 2, prior)
    x32, info = wrc_exact_solve(*(t.float().to(device) for t in (y, kernel, lam, wl, wh)), 2, prior.float().to(device),
                                return_info=True)
    x32 = x32.cpu()
    assert x32.dtype == torch.float32 and info.tol == 1e-5 and info.converged
    assert max_rel(x32.double(), x64) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_in_same_dtype_out(dtype):
    y, kernel, lam, wl, wh, prior = random_problem(1, 2, 4, 4, 2, 2, seed=11)
    args = [t.to(dtype) for t in (y, kernel, lam, wl, wh)]
    x = wrc_exact_solve(*args, 2, prior.to(dtype))
    assert x.dtype == dtype
    ref = wrc_exact_solve(*(t.double() for t in args), 2, prior.to(dtype).double())
    assert max_rel(x.double(), ref) <= 1e-2  # only the final rounding to the half dtype


def test_non_convergence_warns():
    y, kernel, lam, wl, wh, prior = random_problem(1, 2, 6, 6, 2, 3, seed=12)
    with pytest.warns(RuntimeWarning, match="did not converge.*residual"):
        _, info = wrc_exact_solve(y, kernel, lam, wl, wh, 2, prior, max_iter=1, tol=1e-14, return_info=True)
    assert not info.converged and info.iterations == 1 and info.residual > 1e-14


# --------------------------------------------------------------------------------------------- gradients
NAMES = ("y", "kernel", "lam", "weight_low", "weight_high", "prior")

# gradcheck: the solves run at tol 1e-14, but central differences with eps = 1e-6 of PCG solutions still carry
# up to ~1.2e-8 absolute noise (measured on these problems, Jacobian entries up to ~7); a wrong gradient is off
# by O(1). The analytic gradient itself is checked to 1e-8 relative against dense autograd below.


def test_gradcheck_all_inputs():
    y, kernel, lam, wl, wh, prior = random_problem(1, 2, 3, 4, 2, 2, seed=13)
    # Weights kept away from 0 so that the finite differences stay inside the domain ω ≥ 0.
    inputs = tuple(t.clone().requires_grad_() for t in (y, kernel, lam, wl + 0.1, wh + 0.1, prior))

    def solve(y, kernel, lam, wl, wh, prior):
        return wrc_exact_solve(y, kernel, lam, wl, wh, 2, prior, tol=1e-14)

    assert torch.autograd.gradcheck(solve, inputs, eps=1e-6, atol=5e-8, rtol=1e-6, fast_mode=True)


def test_gradcheck_default_prior_and_broadcast_lam():
    y, kernel, _, wl, wh, _ = random_problem(1, 2, 3, 4, 2, 3, seed=14)
    lam = torch.tensor([0.4], dtype=torch.float64)  # broadcast over B and C
    inputs = tuple(t.clone().requires_grad_() for t in (y, kernel, lam, wl + 0.1, wh + 0.1))

    def solve(y, kernel, lam, wl, wh):
        return wrc_exact_solve(y, kernel, lam, wl, wh, 2, tol=1e-14)

    assert torch.autograd.gradcheck(solve, inputs, eps=1e-6, atol=5e-8, rtol=1e-6, fast_mode=True)


@pytest.mark.parametrize("s,kappa", [(2, 2), (3, 3)])
def test_implicit_backward_matches_dense_autograd(s, kappa):
    y, kernel, lam, wl, wh, prior = random_problem(2, 2, 3, 2, s, kappa, seed=20 + s)
    lam = lam[0, :, 0, 0].reshape(2, 1, 1)  # C×1×1: gradient must come back in this shape
    cot = torch.randn(2, 2, 3 * s, 2 * s, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    leaves = [t.clone().requires_grad_() for t in (y, kernel, lam, wl, wh, prior)]
    x, info = wrc_exact_solve(*leaves[:5], s, leaves[5], return_info=True)
    got = torch.autograd.grad(x, leaves, cot)
    assert info.adjoint_converged and info.adjoint_iterations is not None

    leaves_ref = [t.clone().requires_grad_() for t in (y, kernel, lam, wl, wh, prior)]
    ref = dense_solve(*leaves_ref[:5], s, leaves_ref[5])
    want = torch.autograd.grad(ref, leaves_ref, cot)
    for name, g, r in zip(NAMES, got, want):
        assert g.shape == r.shape, name
        assert max_rel(g, r) <= 1e-8, name


def test_backward_partial_requires_grad_and_prior_path():
    # Only y and weight_low need gradients; the default prior makes y enter twice (data term and prior).
    y, kernel, lam, wl, wh, _ = random_problem(1, 2, 3, 3, 2, 2, seed=30)
    y_leaf, wl_leaf = y.clone().requires_grad_(), wl.clone().requires_grad_()
    x = wrc_exact_solve(y_leaf, kernel, lam, wl_leaf, wh, 2)
    got = torch.autograd.grad(x.square().sum(), (y_leaf, wl_leaf))
    y_ref, wl_ref = y.clone().requires_grad_(), wl.clone().requires_grad_()
    ref = dense_solve(y_ref, kernel, lam, wl_ref, wh, 2, bilinear_prior(y_ref, 2))
    want = torch.autograd.grad(ref.square().sum(), (y_ref, wl_ref))
    for g, r in zip(got, want):
        assert max_rel(g, r) <= 1e-8


def test_half_precision_backward_dtype():
    y, kernel, lam, wl, wh, prior = random_problem(1, 2, 4, 4, 2, 2, seed=31)
    leaves = [t.to(torch.bfloat16).requires_grad_() for t in (y, kernel, lam, wl, wh, prior)]
    x = wrc_exact_solve(*leaves[:5], 2, leaves[5])
    grads = torch.autograd.grad(x.float().sum(), leaves)
    for t, g in zip(leaves, grads):
        assert g.dtype == torch.bfloat16 and g.shape == t.shape and torch.isfinite(g.float()).all()


# -------------------------------------------------------------------------------------------- validation
def _good():
    return random_problem(1, 2, 3, 3, 2, 2, seed=40)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(y=a["y"][0]), "y must have 4"),
        (lambda a: a.update(scale=0), "scale must be >= 1"),
        (lambda a: a.update(weight_low=-a["weight_low"] - 1), "weight_low must be >= 0"),
        (lambda a: a.update(weight_high=-a["weight_high"] - 1), "weight_high must be >= 0"),
        (lambda a: a.update(lam=torch.zeros(1, 2, 1, 1, dtype=torch.float64)), "lam must be > 0"),
        (lambda a: a.update(lam=-1.0), "lam must be > 0"),
        (lambda a: a.update(lam=torch.ones(3, dtype=torch.float64)), "lam must be broadcastable"),
        (lambda a: a["y"].__setitem__((0, 0, 0, 0), float("nan")), "y contains NaN"),
        (lambda a: a["y"].__setitem__((0, 0, 0, 0), float("inf")), "y contains NaN or Inf"),
        (lambda a: a.update(weight_high=a["weight_high"][..., :-1]), "weight_high must have shape"),
        (lambda a: a.update(weight_low=a["weight_low"][..., :-1]), "weight_low must have shape"),
        (lambda a: a.update(prior=a["prior"][..., :-1, :]), "prior must have shape"),
        (lambda a: a.update(kernel=a["kernel"][:1]), "kernel must have C=2"),
        (lambda a: a.update(kernel=a["kernel"][None].expand(2, -1, -1, -1)), "kernel must be"),
        (lambda a: a.update(max_iter=0), "max_iter must be >= 1"),
        (lambda a: a.update(tol=-1.0), "tol must be a positive"),
    ],
)
def test_validation_errors_name_the_argument(mutate, match):
    y, kernel, lam, wl, wh, prior = _good()
    args = dict(y=y, kernel=kernel, lam=lam, weight_low=wl, weight_high=wh, scale=2, prior=prior)
    mutate(args)
    with pytest.raises(ValueError, match=match):
        wrc_exact_solve(**args)


def test_type_errors():
    y, kernel, lam, wl, wh, prior = _good()
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        wrc_exact_solve(y.numpy(), kernel, lam, wl, wh, 2)
    with pytest.raises(TypeError, match="scale must be an int"):
        wrc_exact_solve(y, kernel, lam, wl, wh, 2.0)
    with pytest.raises(TypeError, match="lam must be"):
        wrc_exact_solve(y, kernel, "0.1", wl, wh, 2)
    with pytest.raises(TypeError, match="weight_low must be a floating"):
        wrc_exact_solve(y, kernel, lam, wl.long(), wh, 2)
