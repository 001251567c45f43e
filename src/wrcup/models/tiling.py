"""Large outputs in bounded memory: the upsampler run on overlapping tiles, bilinear growth band by band.

Pure planning parts (small, tested on their own):

- :func:`tile_spans` / :func:`plan_tiles`: overlapping tiles covering a grid (stride ``tile - overlap``, the last
  tile aligned to the end, so every tile has the full size when the grid allows it).
- :func:`blend_ramp` / :func:`blend_window`: the weight of each tile's outputs: linear ramps over the part it
  shares with a neighbour, 1 elsewhere; the blended result is the weighted sum divided by the summed weights.
- the growth past the learned passes (exact bilinear, or image-guided) lives in :mod:`wrcup.models.growth`;
  its names are importable from here too.
- :func:`pass_bytes` / :func:`choose_tile`: the working memory of one 2× pass of the WRC upsampler and the
  largest tile that fits a budget.

Why seams cannot vanish exactly: the network's convolutions see a neighbourhood (3×3 convolutions in every
bottleneck, strided ones in the image branch), and the WRC operator solves its deconvolution with FFTs on a
circularly padded grid, so within a tile it is global. A tile's outputs near its border therefore differ from the
untiled ones; the overlap (in cells of the pass's input grid) lets the ramps give those border outputs little
weight. :data:`DEFAULT_OVERLAP` was picked from a measurement against the untiled pass (a real photo, 448-pixel
short side, the second pass from the grid 64×86, tiles of 24 + overlap cells): the mean per-cell cosine is
0.999 at every overlap from 3 to 19 cells, while the minimum rises from 0.97 to 0.98 and the share of cells
below 0.99 falls from 0.16 % to 0.06 % at 8 cells and no further beyond. The worst cells are not all on tile
borders: the operator's FFT over the whole tile moves them too.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .growth import (GUIDED_GROW_BLOCK, bilinear_runs, grow_bilinear, grow_guided, grow_guided_bytes,
                     grow_scratch_bytes, linear_taps, resize_crop)

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_MAX_MEMORY", "tile_spans", "plan_tiles", "blend_ramp", "blend_window",
           "linear_taps", "resize_crop", "bilinear_runs", "grow_bilinear", "grow_guided", "grow_guided_bytes",
           "GUIDED_GROW_BLOCK", "grow_scratch_bytes", "pass_bytes", "choose_tile", "parse_memory", "guidance_crop", "tiled_pass",
           "learned_passes_to_guidance", "learned_grid", "upsample_bounded"]

# Overlap between neighbouring tiles, in cells of the pass's INPUT grid (the output overlap is twice that).
DEFAULT_OVERLAP = 8
# Default budget: fits a laptop.
DEFAULT_MAX_MEMORY = 4 * 2**30
# Working memory of one untiled 2× pass, in bytes per OUTPUT cell per feature channel (float32, CPU). Measured
# 26 and 23 (peak RSS growth of the pass, output included; wrc-reference, dim 384, output grids 256×336 and
# 512×672), rounded up for the allocator's slack.
PASS_BYTES_PER_CELL_CHANNEL = 40
# Memory the budget keeps for the rest of the process (Python, torch, the model, the image and its backbone pass).
RESERVED_BYTES = 2**30


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[(start, stop), …] covering ``range(length)`` with the fewest tiles of ``tile`` cells overlapping by at least
    ``overlap``, spread evenly from 0 to ``length``; a single span when ``tile >= length``.
    Requires ``0 <= overlap < tile``."""
    if length < 1 or tile < 1 or overlap < 0:
        raise ValueError(f"need length ≥ 1, tile ≥ 1, overlap ≥ 0; got {length}, {tile}, {overlap}")
    if tile >= length:
        return [(0, length)]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    # the fewest tiles whose overlaps are all ≥ overlap, their starts spread evenly (no sliver of a last tile)
    n = 1 + -(-(length - tile) // (tile - overlap))
    return [(s, s + tile) for s in (round(k * (length - tile) / (n - 1)) for k in range(n))]


def plan_tiles(grid_hw: Sequence[int], tile: int, overlap: int = DEFAULT_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Tiles (y0, y1, x0, x1) of a grid (h, w): :func:`tile_spans` along each direction, rows first."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    return [(y0, y1, x0, x1) for y0, y1 in tile_spans(h, tile, overlap) for x0, x1 in tile_spans(w, tile, overlap)]


def blend_ramp(length: int, lead: int, trail: int) -> torch.Tensor:
    """1-D weights (float32, ``length``): ``(i + 0.5) / lead`` over the first ``lead`` entries, mirrored over the
    last ``trail``, 1 elsewhere (never 0, so every cell has weight). Two neighbours whose ramps cover the same
    ``n`` shared cells sum to exactly 1 there."""
    w = torch.ones(length)
    if lead:
        w[:lead] = torch.minimum(w[:lead], (torch.arange(lead) + 0.5) / lead)
    if trail:
        w[length - trail:] = torch.minimum(w[length - trail:], (torch.arange(trail, 0, -1) - 0.5) / trail)
    return w


def _shared(spans: list[tuple[int, int]], i: int) -> tuple[int, int]:
    """Cells span i shares with the previous and with the next span."""
    start, stop = spans[i]
    lead = spans[i - 1][1] - start if i > 0 else 0
    trail = stop - spans[i + 1][0] if i + 1 < len(spans) else 0
    return max(lead, 0), max(trail, 0)


def blend_window(grid_hw: Sequence[int], tile: int, overlap: int, index: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """Weights (float32, (scale·th)×(scale·tw)) of tile ``index`` = (row, column) of :func:`plan_tiles`, for its
    outputs at ``scale``× the grid: the outer product of :func:`blend_ramp` along both directions, ramping over
    the cells it shares with each neighbour (none at the grid's border)."""
    ramps = []
    for length, i in zip(grid_hw, index):
        spans = tile_spans(int(length), tile, overlap)
        lead, trail = _shared(spans, i)
        start, stop = spans[i]
        ramps.append(blend_ramp(scale * (stop - start), scale * lead, scale * trail))
    return ramps[0][:, None] * ramps[1][None, :]


def pass_bytes(grid_hw: Sequence[int], dim: int, batch: int = 1) -> int:
    """Working memory (bytes) of one untiled 2× pass from grid (h, w): its input, its output and the network's
    activations (see :data:`PASS_BYTES_PER_CELL_CHANNEL`), float32."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    return batch * 4 * h * w * dim * PASS_BYTES_PER_CELL_CHANNEL


def choose_tile(grid_hw: Sequence[int], dim: int, max_memory: int, overlap: int = DEFAULT_OVERLAP,
                batch: int = 1, reserved: int = 0) -> int | None:
    """The tile side (in cells of the pass's input grid) for one pass from grid (h, w) within ``max_memory`` bytes,
    of which ``reserved`` are kept for the rest of the process, or None when the untiled pass fits. The pass's
    input and output stay in memory whole (the output is what the tiles are blended into): they are budgeted
    first, the tile's activations get the rest. MemoryError, with the smallest budget that would do, when even
    the smallest tile does not fit."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    available = max_memory - reserved
    if pass_bytes((h, w), dim, batch) <= available:
        return None
    whole = batch * 4 * dim * (h * w + 4 * h * w) + batch * 4 * 4 * h * w  # input, output, weight sums
    left = available - whole
    per_cell = pass_bytes((1, 1), dim, batch)
    side = int(math.isqrt(left // per_cell)) if left > 0 else 0
    floor = 2 * overlap + 8  # a tile must keep something after its ramps
    if side < floor:
        need = reserved + whole + floor * floor * per_cell
        kept = f"{reserved / 2**30:.2f} GiB kept for the rest of the process, " if reserved else ""
        raise MemoryError(f"max_memory={max_memory / 2**30:.2f} GiB is too small for a pass from the grid {h}×{w} "
                          f"with {dim} channels: it needs at least {math.ceil(need / 2**20)} MiB ({kept}"
                          f"{whole / 2**30:.2f} GiB for the pass's input and output, the rest for its smallest "
                          "tile)")
    return side


def parse_memory(text: str | int, name: str = "max_memory") -> int:
    """Bytes from an int or a string such as '4G', '4GB', '512M', '1.5g' (powers of 1024). ValueError naming ``name``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        units = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
        s = str(text).strip().lower().removesuffix("ib").removesuffix("b")
        unit = s[-1:] if s[-1:] in units and s[-1:] else ""
        try:
            value = int(float(s[:len(s) - len(unit)]) * units[unit])
        except ValueError:
            raise ValueError(f"{name} must be a size such as 4G, 512M or a number of bytes, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {text!r}")
    return value


def guidance_crop(upsampler, quarter: torch.Tensor, grid_hw: Sequence[int], patch_size: float,
                  tile: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The guidance (g1, g2) of a WRCUpsampler pass for the cells ``tile`` = (y0, y1, x0, x1) of the grid (h, w):
    the matching crop of the resized quarter map (exact, :func:`resize_crop`) and the coarse branch run on it
    (like :meth:`~wrcup.models.upsampler.ImageGuidance.guidance`, which does the whole grid)."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    y0, y1, x0, x1 = tile
    if patch_size > 8:
        g1 = F.max_pool2d(resize_crop(quarter, (4 * h, 4 * w), (4 * y0, 4 * y1), (4 * x0, 4 * x1)), 2)
    else:
        g1 = resize_crop(quarter, (2 * h, 2 * w), (2 * y0, 2 * y1), (2 * x0, 2 * x1))
    g2 = upsampler.image_branch.coarse(g1)
    if tuple(g2.shape[-2:]) != (y1 - y0, x1 - x0):
        g2 = F.interpolate(g2, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    return g1, g2


def tiled_pass(upsampler, features: torch.Tensor, quarter: torch.Tensor | None, patch_size: float, tile: int,
               overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
    """One 2× pass of ``upsampler`` on overlapping tiles: features B×C×h×w → B×C×2h×2w (float32 accumulation,
    returned in the features' dtype).

    Each tile of :func:`plan_tiles` runs the feature path on its crop of the features and of the guidance
    (:func:`guidance_crop`); its outputs are weighted by :func:`blend_window` and the sum is divided by the summed
    weights. ``quarter``: the image branch's quarter map of the whole image (``image_branch.quarter_map``).
    An UnguidedUpsampler is not tiled (its pass is the operator alone on the features, e.g. a plain resize).
    """
    from .output_norm import match_norm
    from .upsampler import WRCUpsampler, _upsample2x

    if not isinstance(upsampler, WRCUpsampler):
        return upsampler.upsample_features(features, None, patch_size)
    B, C, h, w = features.shape
    tiles = plan_tiles((h, w), tile, overlap)
    if len(tiles) == 1:
        return upsampler.upsample_features(features, quarter, patch_size)
    out = torch.zeros(B, C, 2 * h, 2 * w, dtype=torch.float32, device=features.device)
    weight = torch.zeros(2 * h, 2 * w, dtype=torch.float32, device=features.device)
    rows = tile_spans(h, tile, overlap)
    cols = tile_spans(w, tile, overlap)
    for i, (y0, y1) in enumerate(rows):
        for j, (x0, x1) in enumerate(cols):
            g1, g2 = guidance_crop(upsampler, quarter, (h, w), patch_size, (y0, y1, x0, x1))
            y = upsampler.guided(features[..., y0:y1, x0:x1], g1, g2)
            if upsampler.residual or upsampler.output_norm == "bilinear":
                # the bilinear upsampling of the whole grid, cropped (exact), for the shortcut and the norm
                whole = resize_crop(features, (2 * h, 2 * w), (2 * y0, 2 * y1), (2 * x0, 2 * x1))
                if upsampler.residual:
                    y = y - _upsample2x(features[..., y0:y1, x0:x1]) + whole
                if upsampler.output_norm == "bilinear":
                    y = match_norm(y, whole)
            win = blend_window((h, w), tile, overlap, (i, j), scale=2).to(out.device)
            out[..., 2 * y0:2 * y1, 2 * x0:2 * x1] += y.float() * win
            weight[2 * y0:2 * y1, 2 * x0:2 * x1] += win
    return out.div_(weight).to(features.dtype)


def learned_passes_to_guidance(grid_hw: Sequence[int], image_hw: Sequence[int]) -> int:
    """Passes until the grid reaches the image branch's own resolution, a quarter of the image (h, w) → the
    fewest n ≥ 1 with 2ⁿ·h ≥ H/4 and 2ⁿ·w ≥ W/4. Beyond it the guidance g1 is only a bilinear enlargement of the
    quarter map, so further learned passes add cost, not image detail (e.g. 448×588 image, grid 32×42: 2 passes
    → 128×168)."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    H, W = int(image_hw[0]), int(image_hw[1])
    n = 1
    while (h << n) * 4 < H or (w << n) * 4 < W:
        n += 1
    return n


def learned_grid(upsampler, image: torch.Tensor, features: torch.Tensor, size: Sequence[int],
                 max_memory: int = DEFAULT_MAX_MEMORY, learned_passes: int | None = None,
                 overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
    """The learned part of :func:`upsample_bounded`: features B×C×h×w → B×C×2ⁿh×2ⁿw after n passes of the upsampler,
    n = :func:`~wrcup.models.sizing.plan_passes` towards ``size`` (at most ``learned_passes``), each pass tiled
    (:func:`tiled_pass`) when its estimate (:func:`pass_bytes`) exceeds the budget left after
    :data:`RESERVED_BYTES`. image: B×3×(p·h)×(p·w), backbone-normalised."""
    from .sizing import plan_passes
    from .upsampler import WRCUpsampler

    passes = plan_passes(tuple(features.shape[-2:]), (int(size[0]), int(size[1])))
    if learned_passes is not None:
        passes = min(passes, learned_passes)
    quarter = upsampler.image_branch.quarter_map(image) if isinstance(upsampler, WRCUpsampler) and passes else None
    x = features
    for i in range(passes):
        patch = upsampler.patch_size / 2**i
        tile = choose_tile(tuple(x.shape[-2:]), x.shape[1], max_memory, overlap, batch=x.shape[0],
                           reserved=RESERVED_BYTES)
        x = tiled_pass(upsampler, x, quarter, patch, tile or max(x.shape[-2:]), overlap)
    return x


def upsample_bounded(upsampler, image: torch.Tensor, features: torch.Tensor, size: Sequence[int],
                     max_memory: int = DEFAULT_MAX_MEMORY, learned_passes: int | None = None, sink=None,
                     overlap: int = DEFAULT_OVERLAP, band_dtype: torch.dtype | None = None):
    """Features B×C×h×w → B×C×H×W within about ``max_memory`` bytes: like
    :func:`wrcup.models.bundle.upsample_to_size`, with each pass tiled (:func:`learned_grid`).

    Args:
        image: B×3×(p·h)×(p·w), backbone-normalised.
        learned_passes: at most this many passes of the network (default: all of
            :func:`~wrcup.models.sizing.plan_passes`); the rest of the way is bilinear.
        sink: None → the result is returned as a tensor (the final resize as in
            :func:`~wrcup.models.sizing.resize_features`). A callable ``sink(row0, band)`` → the output is never
            held whole: the bilinear growth to H×W is computed band by band of rows (:func:`grow_bilinear`,
            float32 arithmetic) and each band B×C×rows×W is handed to it; returns None. (When the learned grid
            already exceeds H×W, the antialiased shrink is computed whole first.) ``band_dtype``: the bands' dtype
            (default that of the features; float16 halves the memory of the bands). For a whole .npy file see
            :func:`wrcup.models.to_image.write_features_npy` (faster: whole channels per write).
    """
    from .sizing import resize_features

    size = (int(size[0]), int(size[1]))
    budget = max(max_memory - RESERVED_BYTES, 0)
    x = learned_grid(upsampler, image, features, size, max_memory, learned_passes, overlap)
    grows = x.shape[-2] <= size[0] and x.shape[-1] <= size[1]
    if sink is None or not grows:
        x = resize_features(x, size)
        if sink is None:
            return x
    B, C = x.shape[:2]
    # a band of float32 rows and the scratch of its resize: ≈ 8 bands
    rows = max(1, min(size[0], budget // 8 // max(1, 4 * B * C * size[1])))
    scratch = None
    for r0 in range(0, size[0], rows):
        r1 = min(size[0], r0 + rows)
        if tuple(x.shape[-2:]) == size:
            band = x[..., r0:r1, :].to(band_dtype or x.dtype)
        else:
            band = torch.empty(B, C, r1 - r0, size[1], dtype=band_dtype or x.dtype, device=x.device)
            if scratch is None:
                scratch = torch.empty(grow_scratch_bytes(x.shape, size, rows, x.dtype), dtype=torch.uint8,
                                      device=x.device)
            grow_bilinear(x, size, band, (r0, r1), scratch)
        sink(r0, band)
    return None
