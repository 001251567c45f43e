"""Feature PCA and query-point similarity maps, and the figure the ``upsample`` job writes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_tensor


def feature_pca(*feature_maps: torch.Tensor, n_components: int = 3) -> list[torch.Tensor]:
    """Colour C×h×w feature maps by a PCA basis shared across all of them.

    The basis, centring and per-component min/max are computed on all pixels of all maps together,
    so the low-res and upsampled pictures use the same colours for the same features.

    Returns: one n_components×h×w float32 tensor in [0, 1] per input map.
    """
    if not feature_maps:
        raise ValueError("feature_pca needs at least one feature map")
    flat = []
    for i, f in enumerate(feature_maps):
        check_tensor(f, f"feature_maps[{i}]", 3)
        flat.append(f.detach().float().flatten(1).T)  # (h·w)×C
    channels = {x.shape[1] for x in flat}
    if len(channels) != 1:
        raise ValueError(f"feature maps must share their channel count, got {sorted(channels)}")
    stacked = torch.cat(flat)
    mean = stacked.mean(0, keepdim=True)
    # torch.pca_lowrank is randomised; a full SVD of the C×C covariance is cheap and deterministic.
    cov = (stacked - mean).T @ (stacked - mean) / max(stacked.shape[0] - 1, 1)
    _, eigvecs = torch.linalg.eigh(cov)
    basis = eigvecs[:, -n_components:].flip(-1)
    proj = [(x - mean) @ basis for x in flat]
    allp = torch.cat(proj)
    lo, hi = allp.quantile(0.01, dim=0), allp.quantile(0.99, dim=0)
    out = []
    for p, f in zip(proj, feature_maps):
        p = ((p - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
        out.append(p.T.reshape(n_components, *f.shape[-2:]))
    return out


def similarity_map(features: torch.Tensor, point_xy: Sequence[float], image_size: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of every cell of ``features`` (C×h×w) to the feature at pixel ``point_xy``.

    ``point_xy`` is (x, y) in continuous pixel coordinates of an image of size ``image_size`` = (H, W): the
    origin is the image's top-left corner and pixel i covers [i, i+1) (as in :mod:`wrcup.eval.correspondence`).
    The query feature is sampled bilinearly there. Returns h×w in [-1, 1].
    """
    check_tensor(features, "features", 3)
    H, W = image_size
    x, y = point_xy
    if not (0 <= x < W and 0 <= y < H):
        raise ValueError(f"point (x={x}, y={y}) lies outside the image of size {W}×{H} (width×height)")
    f = F.normalize(features.detach().float(), dim=0)
    grid = torch.tensor([[[[2 * x / W - 1, 2 * y / H - 1]]]], dtype=f.dtype)
    query = F.grid_sample(f[None], grid, mode="bilinear", align_corners=False)[0, :, 0, 0]
    return torch.einsum("chw,c->hw", f, F.normalize(query, dim=0))


def save_comparison_figure(
    path: str | Path,
    image: torch.Tensor,
    low_res: torch.Tensor,
    high_res: torch.Tensor,
    point_xy: Sequence[float] | None,
    title: str | None = None,
) -> Path:
    """Write a PNG: photo | low-res PCA | upsampled PCA | similarity maps (low and high res) for ``point_xy``.

    image: 3×H×W in [0, 1]; low_res: C×h×w; high_res: C×h'×w'. ``point_xy=None`` leaves out the similarity maps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    H, W = image.shape[-2:]
    pca_lo, pca_hi = feature_pca(low_res, high_res)
    sims = [] if point_xy is None else [similarity_map(f, point_xy, (H, W)) for f in (low_res, high_res)]
    panels = [
        ("image", image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), None),
        (f"low-res PCA {low_res.shape[-2]}×{low_res.shape[-1]}", pca_lo.permute(1, 2, 0).numpy(), None),
        (f"upsampled PCA {high_res.shape[-2]}×{high_res.shape[-1]}", pca_hi.permute(1, 2, 0).numpy(), None),
    ] + [(f"similarity, {name}", sim.numpy(), "viridis") for name, sim in zip(("low-res", "upsampled"), sims)]
    # one colour scale for both similarity maps, from their common minimum to 1 (cosines are mostly positive)
    sim_min = float(min(s.min() for s in sims)) if sims else None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, data, cmap) in zip(axes, panels):
        ax.imshow(data, cmap=cmap, extent=(0, W, H, 0), interpolation="nearest",
                  vmin=sim_min if cmap else None, vmax=1 if cmap else None)
        if point_xy is not None:
            ax.plot([point_xy[0]], [point_xy[1]], marker="+", color="red", markersize=12, mew=2)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
