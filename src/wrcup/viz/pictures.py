"""Feature PCA and query-point similarity maps, and the figure the ``upsample`` job writes."""
from __future__ import annotations

import functools
import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from .._checks import check_tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The colour range of a principal component spans at least this fraction of the fitted map's RMS feature norm.
# Photos' components spread over 0.5–1.8 norms (examples/ and ImageNet photos, 1st–99th percentile), a uniform
# image's over 0.1–0.17 (only the position embedding varies): stretching those to the full range would paint a
# grey image as a rainbow with a dark frame, so they are drawn as the muted colours they are.
_MIN_COLOUR_SPAN = 0.5


def feature_pca(*feature_maps: torch.Tensor, n_components: int = 3) -> list[torch.Tensor]:
    """Colour C×h×w feature maps with one PCA projection fitted on the first map and applied to all of them.

    The centring, the basis and the colour range (per component, the 1st to 99th percentile) all come from the
    first map alone — in the ``upsample`` figure, the backbone's low-res features — and the same affine map is
    applied to every map. So a feature vector gets the same colour in every picture, and a systematic offset
    between maps (an upsampler that shifts all features a little) cannot take over the colours, as it would if
    the basis were fitted on the maps pooled together. Values outside the fitted range are clipped.
    Each basis vector's sign is fixed (largest loading positive), so colours do not flip between runs.
    A component's colour range is at least half the fitted map's RMS feature norm, centred on its percentile
    range: small differences (a uniform image) stay muted instead of being stretched to full colour, and a
    component without spread (a constant map, fewer channels or pixels than components) is drawn 0.5.

    Returns: one n_components×h×w float32 tensor in [0, 1] per input map.
    """
    if not feature_maps:
        raise ValueError("feature_pca needs at least one feature map")
    flat = []
    for i, f in enumerate(feature_maps):
        check_tensor(f, f"feature_maps[{i}]", 3)
        flat.append(f.detach().cpu().double().flatten(1).T)  # (h·w)×C
    channels = {x.shape[1] for x in flat}
    if len(channels) != 1:
        raise ValueError(f"feature maps must share their channel count, got {sorted(channels)}")
    fit = flat[0]
    mean = fit.mean(0, keepdim=True)
    centred = fit - mean
    # torch.pca_lowrank is randomised; an eigendecomposition of the C×C covariance is cheap and deterministic.
    cov = centred.T @ centred / max(fit.shape[0] - 1, 1)
    _, eigvecs = torch.linalg.eigh(cov)
    k = min(n_components, eigvecs.shape[1])
    basis = eigvecs[:, -k:].flip(-1) if k else eigvecs[:, :0]
    strongest = basis[basis.abs().argmax(0), torch.arange(k)]
    basis = basis * torch.where(strongest < 0, -1.0, 1.0)
    fitted = centred @ basis
    lo, hi = fitted.quantile(0.01, dim=0), fitted.quantile(0.99, dim=0)
    span = torch.maximum(hi - lo, _MIN_COLOUR_SPAN * fit.square().sum(1).mean().sqrt())
    middle = (hi + lo) / 2
    out = []
    for x, f in zip(flat, feature_maps):
        colours = torch.full((x.shape[0], n_components), 0.5, dtype=torch.float64)
        # a zero span (all-zero features) leaves the component at 0.5
        colours[:, :k] = (0.5 + ((x - mean) @ basis - middle) / span.clamp_min(1e-300)).clamp(0, 1)
        out.append(colours.T.reshape(n_components, *f.shape[-2:]).float())
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
    grid = torch.tensor([[[[2 * x / W - 1, 2 * y / H - 1]]]], dtype=f.dtype, device=f.device)
    query = F.grid_sample(f[None], grid, mode="bilinear", align_corners=False)[0, :, 0, 0]
    return torch.einsum("chw,c->hw", f, F.normalize(query, dim=0))


# Fonts with wide Unicode coverage (CJK, Arabic, Hebrew, Indic, …) under the names they commonly have on Linux,
# macOS and Windows. Only the installed ones are used, after matplotlib's default font, as glyph fallbacks.
FALLBACK_FONT_FAMILIES: tuple[str, ...] = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Noto Sans",
    "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai", "Arial Unicode MS",
    "Microsoft YaHei", "SimHei", "Yu Gothic", "MS Gothic", "Malgun Gothic", "PingFang SC", "Hiragino Sans",
    "Apple SD Gothic Neo", "Nirmala UI", "Segoe UI", "FreeSans", "Unifont",
)


def font_families() -> list[str]:
    """matplotlib's default font family followed by the installed :data:`FALLBACK_FONT_FAMILIES`."""
    from matplotlib import font_manager

    default = font_manager.get_font(font_manager.findfont(font_manager.FontProperties())).family_name
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [default] + [name for name in FALLBACK_FONT_FAMILIES if name in installed and name != default]


@functools.lru_cache(maxsize=64)
def _charmap(font_path: str) -> frozenset[int]:
    from matplotlib import font_manager

    return frozenset(font_manager.get_font(font_path).get_charmap())


def drawable_text(text: str, families: Sequence[str]) -> str:
    """``text`` as it can be drawn with the fonts ``families``: characters that no font among them has become
    Python escapes (``写`` → ``\\u5199``), so a title never renders as boxes or warns of missing glyphs.

    Text holding right-to-left letters (Arabic, Hebrew) starts with a left-to-right mark, so that a title like
    "صورة.jpg — model" keeps its left-to-right order where matplotlib lays out bidirectional text.
    """
    from matplotlib import font_manager

    covered = frozenset().union(*(
        _charmap(font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False))
        for name in families))
    out = "".join(c if ord(c) in covered else c.encode("unicode_escape").decode("ascii") for c in text)
    if any(unicodedata.bidirectional(c) in ("R", "AL") for c in out) and 0x200E in covered:
        out = "\u200e" + out
    return out


# Candidate panel grids per number of panels: (rows, cols, grid cell of each panel in reading order). With the
# similarity maps, the low-res panels sit left of (or above) the upsampled ones in every grid with spare cells.
_GRIDS = {
    5: ((1, 5, (0, 1, 2, 3, 4)), (2, 3, (0, 1, 2, 4, 5)), (3, 2, (0, 2, 3, 4, 5)), (5, 1, (0, 1, 2, 3, 4))),
    3: ((1, 3, (0, 1, 2)), (2, 2, (0, 2, 3)), (3, 1, (0, 1, 2))),
}
_FIGURE_ASPECT = 16 / 9  # the panel grid whose overall width/height is nearest to this is chosen
_MAX_FIGURE_IN = (16.0, 12.0)  # width, height in inches (at 100 dpi: at most 1600×1200 pixels)
_MAX_PANEL_AREA_IN2 = 14.0
_DPI = 100


def figure_layout(n_panels: int, aspect: float) -> tuple[int, int, tuple[int, ...], tuple[float, float], float]:
    """Grid and size for ``n_panels`` (3 or 5) pictures of width/height ``aspect``.

    Returns (rows, cols, the grid cell of each panel, (width, height) of the figure in inches, the height of one
    panel in inches). The grid is the
    one whose pictures together come nearest to a 16:9 block — a wide panorama stacks its panels in a column,
    a tall strip puts them side by side — and the figure fits in 16×12 inches.
    """
    if n_panels not in _GRIDS:
        raise ValueError(f"n_panels must be 3 or 5, got {n_panels}")
    if not (aspect > 0 and math.isfinite(aspect)):
        raise ValueError(f"aspect must be a positive width/height ratio, got {aspect}")
    rows, cols, cells = min(_GRIDS[n_panels], key=lambda g: abs(math.log(g[1] * aspect / g[0] / _FIGURE_ASPECT)))
    # room for the suptitle, the panel titles (two lines each), the colour bar and the legend
    extra_w = 0.9 if n_panels == 5 and cols > 1 else 0.3
    extra_h = 0.5 + 0.45 * rows + (0.8 if n_panels == 5 and cols == 1 else 0.3)
    panel_h = min(math.sqrt(_MAX_PANEL_AREA_IN2 / aspect),
                  (_MAX_FIGURE_IN[0] - extra_w) / (cols * aspect), (_MAX_FIGURE_IN[1] - extra_h) / rows)
    size = (min(cols * panel_h * aspect + extra_w, _MAX_FIGURE_IN[0]), min(rows * panel_h + extra_h, _MAX_FIGURE_IN[1]))
    return rows, cols, cells, size, panel_h


def _point_text(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def comparison_figure(
    image: torch.Tensor,
    low_res: torch.Tensor,
    high_res: torch.Tensor,
    point_xy: Sequence[float] | None,
    title: str | None = None,
    point_label: str | None = None,
) -> "Figure":
    """The figure :func:`save_comparison_figure` writes, as a matplotlib Figure (not attached to pyplot).

    image: 3×H×W in [0, 1]; low_res: C×h×w; high_res: C×h'×w'; point_xy: (x, y) in pixels of ``image``, or
    None to leave out the similarity maps. Panels: photo | low-res PCA | upsampled PCA | cosine-similarity maps
    (low-res and upsampled) to the feature at ``point_xy``, with one colour bar, and the point marked on every
    panel and named in a legend (``point_label``, default "query (x, y)"). Both PCA panels use one projection
    (:func:`feature_pca`, fitted on ``low_res``); both similarity maps use one colour scale, from
    min(0, lowest value) to 1, so a nearly uniform map stays nearly uniform in colour. The grid follows the
    image's aspect ratio (:func:`figure_layout`). Text is drawn with :func:`font_families`; characters none of
    them has are escaped (:func:`drawable_text`).
    """
    import matplotlib
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    check_tensor(image, "image", 3)
    check_tensor(low_res, "low_res", 3)
    check_tensor(high_res, "high_res", 3)
    if image.shape[0] not in (1, 3):
        raise ValueError(f"image must be 1×H×W or 3×H×W, got shape {tuple(image.shape)}")
    H, W = image.shape[-2:]
    families = font_families()
    pca_lo, pca_hi = feature_pca(low_res, high_res)
    panels = [
        # sizes as width×height, as wrcup upsample states them
        (f"image\n{W}×{H}", image.detach().float().cpu().expand(3, H, W).permute(1, 2, 0).clamp(0, 1).numpy()),
        (f"low-res PCA\n{low_res.shape[-1]}×{low_res.shape[-2]}", pca_lo.permute(1, 2, 0).numpy()),
        (f"upsampled PCA\n{high_res.shape[-1]}×{high_res.shape[-2]}", pca_hi.permute(1, 2, 0).numpy()),
    ]
    sims = []
    if point_xy is not None:
        sims = [similarity_map(f, point_xy, (H, W)).cpu() for f in (low_res, high_res)]
        for name, s in zip(("similarity, low-res", "similarity, upsampled"), sims):
            panels.append((f"{name}\nvalues {float(s.min()):.2f} … {float(s.max()):.2f}", s.numpy()))
    rows, cols, cells, figsize, panel_h = figure_layout(len(panels), W / H)
    with matplotlib.rc_context({"font.family": families}):
        fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
        stacked = cols == 1
        # an extra thin row for the colour bar below panels stacked in a column
        grid = fig.add_gridspec(rows + (stacked and bool(sims)), cols,
                                height_ratios=[1] * rows + ([0.15 / panel_h] if stacked and sims else []))
        axes = []
        vmin = min(0.0, *(float(s.min()) for s in sims)) if sims else 0.0
        for i, ((name, data), cell) in enumerate(zip(panels, cells)):
            ax = fig.add_subplot(grid[cell // cols, cell % cols])
            im = ax.imshow(data, cmap="viridis" if i >= 3 else None, vmin=vmin if i >= 3 else None,
                           vmax=1.0 if i >= 3 else None, extent=(0, W, H, 0), interpolation="nearest")
            ax.set_title(name, fontsize=8, parse_math=False)
            ax.set_axis_off()
            ax.set_xticks([]), ax.set_yticks([])  # hidden ticks are still laid out when placing the title
            axes.append((ax, im))
        if sims:
            if stacked:
                cax = fig.add_subplot(grid[rows, :])
            else:  # as tall as the panels: an inset right of the last map (the layout makes room for it)
                cax = axes[-1][0].inset_axes((1.04, 0, 0.15 / (panel_h * W / H), 1))
            bar = fig.colorbar(axes[3][1], cax=cax, orientation="horizontal" if stacked else "vertical")
            bar.set_label("cosine similarity", fontsize=8)
            bar.ax.tick_params(labelsize=7)
            label = drawable_text(point_label or f"query ({_point_text(point_xy[0])}, {_point_text(point_xy[1])})",
                                  families)
            style = dict(marker="+", color="red", markersize=11, mew=2, linestyle="none",
                         path_effects=[patheffects.withStroke(linewidth=4, foreground="white")])
            for ax, _ in axes:
                ax.plot([point_xy[0]], [point_xy[1]], **style)
            handle = Line2D([], [], **style)
            spare = sorted(set(range(rows * cols)) - set(cells))
            if spare:  # the empty grid cell holds the legend
                lax = fig.add_subplot(grid[spare[0] // cols, spare[0] % cols])
                lax.set_axis_off()
                lax.legend([handle], [label], loc="center", fontsize=8, frameon=False)
            else:
                fig.legend([handle], [label], loc="outside lower center", fontsize=8, frameon=False)
        if title:
            fig.suptitle(drawable_text(title, families), fontsize=10, parse_math=False)
    return fig


def save_comparison_figure(
    path: str | Path,
    image: torch.Tensor,
    low_res: torch.Tensor,
    high_res: torch.Tensor,
    point_xy: Sequence[float] | None,
    title: str | None = None,
    point_label: str | None = None,
) -> Path:
    """Write :func:`comparison_figure` as a PNG at ``path`` (atomically) and return the path.

    image: 3×H×W in [0, 1]; low_res: C×h×w; high_res: C×h'×w'; point_xy: (x, y) in pixels of ``image``, or None
    for the PCA panels only.
    """
    from .._io import atomic_path

    fig = comparison_figure(image, low_res, high_res, point_xy, title=title, point_label=point_label)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path
