"""TokenCut: eigen-solution against scipy's generalised solver, boxes on synthetic key maps."""
import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from scipy import ndimage

from wrcup.eval.tokencut import ncut_eigenvector, tokencut_box, tokencut_graph




def square_keys(h, w, squares, noise=0.05, seed=0, channels=8):
    """Background keys near e0, object keys near e1 (orthogonal: cosine ≈ 0 < tau)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.zeros(channels, h, w)
    keys[0] = 1.0
    for y0, y1, x0, x1 in squares:
        keys[0, y0:y1, x0:x1] = 0.0
        keys[1, y0:y1, x0:x1] = 1.0
    return keys + noise * torch.randn(channels, h, w, generator=g)


def oracle_box(keys, image_size, tau, eps):
    """Straight transcription with numpy/scipy: generalised eigh, mean split, seed side, seed component."""
    c, h, w = keys.shape
    x = keys.double().numpy().reshape(c, -1).T
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    a = x @ x.T
    a = np.where(a > tau, 1.0, eps)
    d = np.diag(a.sum(1))
    _, vec = scipy.linalg.eigh(d - a, d, subset_by_index=[1, 1])
    y = vec[:, 0]
    part = y > y.mean()
    seed = np.argmax(np.abs(y))
    if not part[seed]:
        part = ~part
    lab, _ = ndimage.label(part.reshape(h, w))
    mask = lab == lab.flat[seed]
    ys, xs = np.nonzero(mask)
    sy, sx = image_size[0] / h, image_size[1] / w
    return (xs.min() * sx, ys.min() * sy, min(image_size[1], (xs.max() + 1) * sx),
            min(image_size[0], (ys.max() + 1) * sy)), mask


def test_eigenvector_matches_scipy_generalised_solver():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(16, 9, 10, generator=g)
    wts = tokencut_graph(keys, tau=0.2, eps=1e-5)
    lam, y = ncut_eigenvector(wts)
    a = wts.numpy()
    d = np.diag(a.sum(1))
    vals, vecs = scipy.linalg.eigh(d - a, d, subset_by_index=[0, 2])
    assert vals[2] - vals[1] > 1e-6  # a simple eigenvalue, so the vector is defined up to sign
    assert lam == pytest.approx(vals[1], rel=1e-10, abs=1e-12)
    ref = vecs[:, 1]
    ref = ref * np.sign(ref @ y.numpy())
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-8, atol=1e-10)
    # the relaxation's defining properties: D-normalised and D-orthogonal to the constant vector
    deg = wts.sum(1)
    assert float((y * deg * y).sum()) == pytest.approx(1.0, rel=1e-10)
    assert abs(float((y * deg).sum())) < 1e-8


@pytest.mark.parametrize("seed", [0, 1])
def test_lanczos_solver_matches_scipy_generalised_solver(seed):
    # smooth keys on a 40×45 grid (1800 nodes): a clear eigengap, as real key maps have
    g = torch.Generator().manual_seed(seed)
    keys = F.interpolate(torch.randn(1, 12, 5, 6, generator=g), size=(40, 45), mode="bilinear")[0]
    wts = tokencut_graph(keys, tau=0.2, eps=1e-5)
    a = wts.numpy()
    d = np.diag(a.sum(1))
    vals, vecs = scipy.linalg.eigh(d - a, d, subset_by_index=[0, 2])
    assert vals[2] - vals[1] > 1e-6
    lam, y = ncut_eigenvector(wts, solver="lanczos")
    assert lam == pytest.approx(vals[1], rel=1e-9, abs=1e-12)
    ref = vecs[:, 1] * np.sign(vecs[:, 1] @ y.numpy())
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-6, atol=1e-8)
    lam2, y2 = ncut_eigenvector(wts, solver="lanczos")  # deterministic: same start vector
    assert lam2 == lam and torch.equal(y2, y)
    with pytest.raises(ValueError, match="solver"):
        ncut_eigenvector(wts, solver="arpack")


def test_graph_is_binary_cosine_threshold():
    keys = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.1, 1.0]])[:, None, :]  # 2 channels, 1×3 grid
    wts = tokencut_graph(keys, tau=0.2, eps=1e-5)
    want = torch.tensor([[1, 1, 1e-5], [1, 1, 1e-5], [1e-5, 1e-5, 1]], dtype=torch.float64)
    torch.testing.assert_close(wts, want, rtol=0, atol=0)


def test_square_object_box_is_the_square():
    keys = square_keys(14, 16, [(3, 7, 5, 10)])
    box, mask = tokencut_box(keys, (224, 256))
    assert box == (5 * 16.0, 3 * 16.0, 10 * 16.0, 7 * 16.0)
    want = torch.zeros(14, 16, dtype=torch.bool)
    want[3:7, 5:10] = True
    assert torch.equal(mask, want)


def test_box_comes_from_the_seed_component_only():
    # two separate squares with the same keys: the foreground side holds both, the box covers only one
    squares = [(1, 4, 1, 4), (8, 12, 9, 14)]
    keys = square_keys(14, 16, squares, seed=1)
    box, mask = tokencut_box(keys, (14 * 14, 16 * 14))
    boxes = [(x0 * 14.0, y0 * 14.0, x1 * 14.0, y1 * 14.0) for y0, y1, x0, x1 in squares]
    assert box in boxes
    y0, y1, x0, x1 = squares[boxes.index(box)]
    want = torch.zeros(14, 16, dtype=torch.bool)
    want[y0:y1, x0:x1] = True
    assert torch.equal(mask, want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_pipeline_on_smooth_random_keys(seed):
    g = torch.Generator().manual_seed(seed)
    keys = F.interpolate(torch.randn(1, 12, 4, 5, generator=g), size=(12, 15), mode="bilinear")[0]
    box, mask = tokencut_box(keys, (180, 230), tau=0.3)
    want_box, want_mask = oracle_box(keys, (180, 230), 0.3, 1e-5)
    assert box == pytest.approx(want_box)
    assert np.array_equal(mask.numpy(), want_mask)


def test_box_is_clipped_to_a_non_divisible_image():
    keys = square_keys(8, 8, [(5, 8, 6, 8)])  # touches the bottom-right corner
    box, _ = tokencut_box(keys, (100, 90))
    assert box == pytest.approx((6 * 90 / 8, 5 * 100 / 8, 90.0, 100.0))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="keys"):
        tokencut_box(torch.randn(4, 8), (8, 8))
    with pytest.raises(TypeError, match="image_size"):
        tokencut_box(torch.randn(4, 4, 4), 64)
    with pytest.raises(ValueError, match="eps"):
        tokencut_box(torch.randn(4, 4, 4), (64, 64), eps=0.0)
    with pytest.raises(ValueError, match="weights"):
        ncut_eigenvector(torch.randn(3, 4))


def test_seed_component_matches_scipy_labelling():
    """The flood fill that replaced scipy.ndimage.label (4-connectivity) finds the same component."""
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (dev extra) is the oracle here")
    from wrcup.eval.tokencut import _component

    rng = np.random.default_rng(0)
    for _ in range(50):
        region = rng.random((9, 13)) > 0.45
        cells = np.argwhere(region)
        if not len(cells):
            continue
        start = tuple(cells[rng.integers(len(cells))])
        labels, _ = ndimage.label(region)
        np.testing.assert_array_equal(_component(region, start), labels == labels[start])


def test_tokencut_box_needs_no_scipy(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now fails
    keys = torch.randn(8, 6, 6, generator=torch.Generator().manual_seed(0))
    box, mask = tokencut_box(keys, (84, 84))
    assert mask.shape == (6, 6) and bool(mask.any()) and len(box) == 4
    with pytest.raises(ImportError, match="pip install scipy"):
        ncut_eigenvector(torch.ones(2100, 2100, dtype=torch.float64), solver="lanczos")
