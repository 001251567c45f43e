"""TokenCut object discovery (Wang et al., 2022) on a key feature map.

The patch keys form a graph whose edge weights are ``1`` where the cosine similarity exceeds ``tau`` and
``eps`` elsewhere (self-loops included, as the cosine of a key with itself is one). The normalised cut relaxes
to the generalised eigenproblem ``(D - W) y = λ D y``; its second smallest eigenvector splits the nodes at its
mean. TokenCut's rule picks the foreground side: the one holding the node of largest ``|y|`` (the seed); the
box is that of the 4-connected component of the foreground that contains the seed.

The eigenproblem is solved as the symmetric one ``D^{-1/2} (D - W) D^{-1/2} z = λ z`` in float64 with
``torch.linalg.eigh`` and mapped back by ``y = D^{-1/2} z`` (so ``yᵀ D y = 1``, scipy's normalisation). The
dense solve costs ``O((h w)³)``: fine for the usual 28×28..45×45 key grids, minutes for the 64×64 grid of
upsampled features at 448 input, where Lanczos iterations on the normalised affinity (two eigenpairs, matrix-
vector products only) take over.

WRC's protocol uses the last block's keys with ``tau = 0.2`` on VOC07/VOC12 and ``0.3`` on COCO20K.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_finite, check_positive_int, check_tensor

__all__ = ["tokencut_box", "ncut_eigenvector", "tokencut_graph"]


def tokencut_graph(keys: torch.Tensor, tau: float = 0.2, eps: float = 1e-5) -> torch.Tensor:
    """Binary cosine graph of a key map.

    Args:
        keys: ``C×h×w`` float key map.
    Returns:
        float64 ``n×n`` weights (``n = h w``, row-major cells): 1 where ``cos > tau``, ``eps`` elsewhere.
    """
    check_tensor(keys, "keys", 3)
    check_finite(keys, "keys")
    nodes = F.normalize(keys.detach().double().reshape(keys.shape[0], -1).T, dim=1)   # n × C
    cos = nodes @ nodes.T
    return torch.where(cos > tau, torch.ones_like(cos), torch.full_like(cos, eps))


DENSE_MAX_NODES = 2048  # above this a full eigendecomposition (O(n³)) costs minutes; Lanczos needs matvecs only


def ncut_eigenvector(weights: torch.Tensor, solver: str = "auto") -> tuple[float, torch.Tensor]:
    """Second smallest generalised eigenpair of ``(D - W) y = λ D y``.

    Args:
        weights: symmetric ``n×n`` non-negative weights with positive degrees.
        solver: ``"dense"`` (``torch.linalg.eigh`` of the normalised Laplacian, all eigenpairs), ``"lanczos"``
            (ARPACK's ``eigsh`` for the two largest eigenpairs of ``D^{-1/2} W D^{-1/2}``, whose eigenvalues are
            ``1 − λ``; a fixed start vector keeps it deterministic) or ``"auto"`` (dense up to
            :data:`DENSE_MAX_NODES` nodes: a 64×64 key grid takes seconds with Lanczos, minutes dense).
    Returns:
        ``(λ, y)``: the eigenvalue and the float64 eigenvector of length ``n``, normalised so that ``yᵀ D y = 1``
        (its sign is arbitrary, as with any eigensolver).
    """
    check_tensor(weights, "weights", 2)
    if weights.shape[0] != weights.shape[1] or weights.shape[0] < 2:
        raise ValueError(f"weights must be a square matrix with at least 2 nodes, got shape {tuple(weights.shape)}")
    if solver not in ("auto", "dense", "lanczos"):
        raise ValueError(f"solver must be 'auto', 'dense' or 'lanczos', got {solver!r}")
    w = weights.double()
    degree = w.sum(dim=1)
    if not bool((degree > 0).all()):
        raise ValueError("weights must give every node a positive degree")
    inv_sqrt = degree.rsqrt()
    affinity = inv_sqrt[:, None] * w * inv_sqrt[None, :]
    affinity = 0.5 * (affinity + affinity.T)  # exact symmetry for the symmetric solvers
    n = len(w)
    if solver == "dense" or (solver == "auto" and n <= DENSE_MAX_NODES) or n < 4:
        values, vectors = torch.linalg.eigh(torch.eye(n, dtype=w.dtype, device=w.device) - affinity)
        return float(values[1]), vectors[:, 1] * inv_sqrt
    try:
        from scipy.sparse.linalg import LinearOperator, eigsh
    except ImportError as err:  # scipy is an optional dependency (the dev extra); the dense path needs none
        raise ImportError(f"TokenCut on {n} nodes (above DENSE_MAX_NODES={DENSE_MAX_NODES}) uses scipy's Lanczos "
                          "solver: pip install scipy, or pass solver='dense'") from err

    matrix = affinity.cpu()
    operator = LinearOperator((n, n), matvec=lambda v: (matrix @ torch.from_numpy(np.ascontiguousarray(v).reshape(-1))
                                                        ).numpy(), dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(n)
    values, vectors = eigsh(operator, k=2, which="LA", v0=start)
    order = np.argsort(values)[::-1]  # the largest (1, the constant vector) first, then the Fiedler pair
    vector = torch.from_numpy(vectors[:, order[1]].copy()).to(device=w.device)
    return float(1.0 - values[order[1]]), vector * inv_sqrt


def _component(region: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of the bool ``h×w`` ``region`` holding the cell ``start`` (which lies in it)."""
    h, w = region.shape
    mask = np.zeros_like(region, dtype=bool)
    mask[start] = True
    todo = deque([tuple(int(v) for v in start)])
    while todo:
        y, x = todo.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and region[ny, nx] and not mask[ny, nx]:
                mask[ny, nx] = True
                todo.append((ny, nx))
    return mask


def tokencut_box(keys: torch.Tensor, image_size, tau: float = 0.2, eps: float = 1e-5):
    """Box and mask of the principal object found by TokenCut.

    Args:
        keys: ``C×h×w`` float key map (e.g. the last block's keys, heads concatenated, CLS dropped).
        image_size: ``(H, W)`` of the image in pixels; the grid is taken to cover it uniformly, so a cell is
            ``H / h`` by ``W / w`` pixels (the patch size for a ViT grid).
        tau: cosine threshold of the graph edges (0.2 VOC, 0.3 COCO20K).
        eps: weight of the other edges.
    Returns:
        ``(box, mask)``: ``box`` is a tuple of floats ``(x0, y0, x1, y1)`` in pixels, ``x0, y0`` the top-left
        corner and ``x1, y1`` the bottom-right edge (exclusive: a box of one cell is ``H / h`` pixels tall),
        clipped to the image; ``mask`` is the bool ``h×w`` mask of the seed's connected component.
    """
    check_tensor(keys, "keys", 3)
    if not isinstance(image_size, (tuple, list, torch.Size)) or len(image_size) != 2:
        raise TypeError(f"image_size must be a (height, width) pair of ints, got {image_size!r}")
    for v in image_size:
        check_positive_int(v, "image_size")
    if not (isinstance(tau, (int, float)) and -1.0 <= tau <= 1.0):
        raise ValueError(f"tau must be a number in [-1, 1], got {tau!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    _, h, w = keys.shape
    if h * w < 2:
        raise ValueError(f"keys must have at least 2 cells, got shape {tuple(keys.shape)}")

    _, y = ncut_eigenvector(tokencut_graph(keys, tau, eps))
    y = y.cpu().numpy()
    foreground = y > y.mean()
    seed = int(np.argmax(np.abs(y)))
    if not foreground[seed]:
        foreground = ~foreground
    mask = _component(foreground.reshape(h, w), np.unravel_index(seed, (h, w)))
    ys, xs = np.nonzero(mask)

    height, width = image_size
    cell_h, cell_w = height / h, width / w
    box = (float(xs.min() * cell_w), float(ys.min() * cell_h),
           float(min(width, (xs.max() + 1) * cell_w)), float(min(height, (ys.max() + 1) * cell_h)))
    return box, torch.from_numpy(mask)
