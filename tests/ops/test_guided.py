"""Guided-filter upsampling (wrcup.ops.guided) against a float64 oracle that solves every window's ridge
regression as an explicit least-squares problem, cell by cell."""
import pytest
import torch
import torch.nn.functional as F

from wrcup.ops.guided import apply_guided, fit_guided, guided_coefficients, guided_upsample


def _oracle_coefficients(p: torch.Tensor, guide: torch.Tensor, radius: int, eps: float):
    """Per window (clipped at the borders): min Σ_i (aᵀ I_i + b − p_i)² + eps·|window|·‖a‖² by lstsq on rows
    augmented with √(eps·n)·e_j; then each cell's a, b averaged over the windows that cover it."""
    C, h, w = p.shape
    k = guide.shape[0]
    a = torch.zeros(C, k, h, w, dtype=torch.float64)
    b = torch.zeros(C, h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            ys = range(max(0, y - radius), min(h, y + radius + 1))
            xs = range(max(0, x - radius), min(w, x + radius + 1))
            cells = [(i, j) for i in ys for j in xs]
            n = len(cells)
            design = torch.tensor([[*guide[:, i, j].tolist(), 1.0] for i, j in cells], dtype=torch.float64)
            ridge = torch.cat([(eps * n) ** 0.5 * torch.eye(k, dtype=torch.float64),
                               torch.zeros(k, 1, dtype=torch.float64)], dim=1)
            lhs = torch.cat([design, ridge])
            rhs = torch.cat([torch.stack([p[:, i, j] for i, j in cells]), torch.zeros(k, C, dtype=torch.float64)])
            sol = torch.linalg.lstsq(lhs, rhs).solution            # (k+1)×C
            a[:, :, y, x] = sol[:k].T
            b[:, y, x] = sol[k]
    mean_a, mean_b = torch.zeros_like(a), torch.zeros_like(b)
    for y in range(h):
        for x in range(w):
            ys = slice(max(0, y - radius), min(h, y + radius + 1))
            xs = slice(max(0, x - radius), min(w, x + radius + 1))
            mean_a[:, :, y, x] = a[:, :, ys, xs].mean(dim=(-2, -1))
            mean_b[:, y, x] = b[:, ys, xs].mean(dim=(-2, -1))
    return mean_a, mean_b


@pytest.mark.parametrize("k,radius,eps,hw", [(3, 1, 1e-3, (5, 7)), (1, 2, 1e-2, (6, 4)), (3, 2, 1e-1, (4, 9))])
def test_coefficients_match_per_window_least_squares(k, radius, eps, hw):
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2, 4, *hw, generator=g, dtype=torch.float64)
    guide = torch.rand(2, k, *hw, generator=g, dtype=torch.float64)
    a, b = guided_coefficients(p, guide, radius, eps)
    assert a.shape == (2, 4, k, *hw) and b.shape == (2, 4, *hw)
    for n in range(2):
        oa, ob = _oracle_coefficients(p[n], guide[n], radius, eps)
        torch.testing.assert_close(a[n], oa, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(b[n], ob, rtol=1e-9, atol=1e-9)


def test_float32_coefficients_agree_with_float64():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(1, 8, 6, 10, generator=g, dtype=torch.float64)
    guide = torch.rand(1, 3, 6, 10, generator=g, dtype=torch.float64)
    a64, b64 = guided_coefficients(p, guide, 1, 1e-3)
    a32, b32 = guided_coefficients(p.float(), guide.float(), 1, 1e-3)
    assert a32.dtype == torch.float32
    torch.testing.assert_close(a32.double(), a64, rtol=0, atol=1e-3 * a64.abs().max().item())
    torch.testing.assert_close(b32.double(), b64, rtol=0, atol=1e-3 * b64.abs().max().item())


def test_features_linear_in_the_guide_are_reproduced_at_full_resolution():
    """p = M·I + c on the grid: the fit is exact (eps → 0), so the output is M·I + c on the full-resolution guide,
    sharp edges included, where bilinear enlargement would smear them."""
    g = torch.Generator().manual_seed(2)
    image = torch.zeros(1, 3, 24, 32, dtype=torch.float64)
    image[..., :, 13:] = torch.tensor([0.9, 0.2, 0.5], dtype=torch.float64)[:, None, None]  # a vertical edge
    image += 0.3 * torch.rand(1, 3, 24, 32, generator=g, dtype=torch.float64)
    M = torch.randn(5, 3, generator=g, dtype=torch.float64)
    c = torch.randn(5, generator=g, dtype=torch.float64)
    low = F.interpolate(image, size=(6, 8), mode="bilinear", align_corners=False, antialias=True)
    features = torch.einsum("ck,bkhw->bchw", M, low) + c[:, None, None]
    out = guided_upsample(features, image, eps=1e-12)
    expected = torch.einsum("ck,bkhw->bchw", M, image) + c[:, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    bilinear = F.interpolate(features, size=(24, 32), mode="bilinear", align_corners=False)
    assert (bilinear - expected).abs().max() > 0.1  # the test can tell the two apart


def test_fit_in_channel_blocks_equals_the_whole_fit():
    """fit_guided: the image resized to the grid (antialiased) as the guide, channels fitted in blocks; the blocks
    (3 channels, not dividing 8) change nothing, since every channel's fit is its own."""
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 8, 5, 7, generator=g, dtype=torch.float64)
    image = torch.rand(2, 3, 35, 49, generator=g, dtype=torch.float64)
    low = F.interpolate(image, size=(5, 7), mode="bilinear", align_corners=False, antialias=True)
    a, b = guided_coefficients(features, low, 1, 1e-3)
    a3, b3 = fit_guided(features, image, 1, 1e-3, block=3)
    torch.testing.assert_close(a3, a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b3, b, rtol=1e-12, atol=1e-12)


def test_apply_guided_is_the_per_pixel_affine_map():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64)
    b = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)
    guide = torch.rand(3, 5, 6, generator=g, dtype=torch.float64)
    expected = b + sum(a[:, i] * guide[i] for i in range(3))
    # float64 rounding only (the kernel may fuse the multiply-add)
    torch.testing.assert_close(apply_guided(a, b, guide), expected, rtol=0, atol=1e-14)


def test_guided_upsample_gradcheck():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    image = torch.rand(1, 3, 7, 9, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: guided_upsample(f, image, eps=1e-2), (features,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_fitted_in_float32(dtype):
    g = torch.Generator().manual_seed(5)
    features = torch.randn(1, 4, 4, 6, generator=g).to(dtype)
    image = torch.rand(1, 3, 28, 42, generator=g)
    out = guided_upsample(features, image)
    assert out.dtype == dtype
    expected = guided_upsample(features.float(), image)
    torch.testing.assert_close(out, expected.to(dtype), rtol=0, atol=0)


def test_guided_upsample_keeps_full_precision_under_autocast():
    """Under bfloat16 autocast the fit's products (the einsum of slopes) would round to bfloat16: a relative
    error of about 3e-3 here before the filter turned autocast off. With it off, the result equals float32's."""
    g = torch.Generator().manual_seed(6)
    features = torch.randn(1, 16, 8, 12, generator=g)
    image = torch.rand(1, 3, 56, 84, generator=g)
    expected = guided_upsample(features, image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = guided_upsample(features, image)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_guided_upsample_default_size_and_explicit_size():
    features = torch.randn(2, 4, 4, 6)
    image = torch.rand(2, 3, 56, 84)
    assert guided_upsample(features, image).shape == (2, 4, 56, 84)
    assert guided_upsample(features, image, (30, 45)).shape == (2, 4, 30, 45)


@pytest.mark.parametrize("call,match", [
    (lambda f, i: guided_upsample(f, i, (2, 3)), "only enlarges"),
    (lambda f, i: guided_upsample(f, i[:1]), "same batch size"),
    (lambda f, i: guided_upsample(f[0], i), "features"),
    (lambda f, i: guided_upsample(f, i, radius=-1), "radius"),
    (lambda f, i: guided_upsample(f, i, eps=0), "eps"),
    (lambda f, i: guided_coefficients(f, i), "guide must be"),
    (lambda f, i: guided_upsample(f.index_fill(3, torch.tensor([2]), float("nan")), i), "features"),
    (lambda f, i: guided_upsample(f, i.index_fill(3, torch.tensor([5]), float("inf"))), "image"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(torch.randn(2, 4, 4, 6), torch.rand(2, 3, 28, 42))
