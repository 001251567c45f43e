"""Large outputs in bounded memory: the upsampler run on overlapping tiles, bilinear growth band by band.

Pure planning parts (small, tested on their own):

- :func:`tile_spans` / :func:`plan_tiles`: overlapping tiles covering a grid (stride ``tile - overlap``, the last
  tile aligned to the end, so every tile has the full size when the grid allows it).
- :func:`blend_ramp` / :func:`blend_window`: the weight of each tile's outputs: linear ramps over the part it
  shares with a neighbour, 1 elsewhere; the blended result is the weighted sum divided by the summed weights.
- :func:`linear_taps`: the two source indices and the weight of each output index of a bilinear resize
  (``align_corners=False``, as :func:`torch.nn.functional.interpolate`), so any crop of a resized map can be
  computed from the map without resizing all of it.
- :func:`bilinear_runs` / :func:`grow_bilinear`: the same resize computed fast into a preallocated output of any
  float dtype: columns first on the few source rows a band needs, then each run of output rows that reads the
  same two source rows in one broadcast multiply-add (float32 arithmetic, one rounding to the output's dtype).
- :func:`grow_guided`: the image-guided last step (:mod:`wrcup.ops.guided`) computed the same way, block by block,
  without enlarging its coefficient maps to the output size.
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

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_MAX_MEMORY", "tile_spans", "plan_tiles", "blend_ramp", "blend_window",
           "linear_taps", "resize_crop", "bilinear_runs", "grow_bilinear", "grow_guided", "grow_guided_bytes", "GUIDED_GROW_BLOCK", "grow_scratch_bytes", "pass_bytes", "choose_tile", "parse_memory", "guidance_crop", "tiled_pass",
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


def linear_taps(in_len: int, out_len: int, start: int = 0, stop: int | None = None):
    """For outputs ``start:stop`` of a bilinear resize from ``in_len`` to ``out_len`` (``align_corners=False``,
    no antialiasing, as :func:`torch.nn.functional.interpolate`): (i0, i1, frac), output = (1-frac)·x[i0] +
    frac·x[i1]. i0, i1: int64 tensors; frac: float64."""
    stop = out_len if stop is None else stop
    scale = in_len / out_len
    src = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    i1 = (i0 + 1).clamp(max=in_len - 1)
    return i0, i1, src - i0


def resize_crop(x: torch.Tensor, size: Sequence[int], rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Rows ``rows`` and columns ``cols`` of ``F.interpolate(x, size, mode="bilinear", align_corners=False)``
    for x: B×C×h×w, computed from the source cells they need only. → B×C×(r1-r0)×(c1-c0), dtype of x."""
    i0, i1, f = linear_taps(x.shape[-2], int(size[0]), *rows)
    lo, hi = int(i0.min()), int(i1.max()) + 1
    band = x[..., lo:hi, :]
    f = f.to(x.dtype)[:, None]
    band = (band[..., i0 - lo, :] * (1 - f)).add_(band[..., i1 - lo, :] * f)   # B×C×rows×w, small
    if cols == (0, int(size[1])):  # whole rows: torch's kernel (same sample positions, scale 1 along the rows)
        return F.interpolate(band, size=(band.shape[-2], int(size[1])), mode="bilinear", align_corners=False)
    i0, i1, f = linear_taps(x.shape[-1], int(size[1]), *cols)
    f = f.to(x.dtype)
    return (band[..., i0] * (1 - f)).add_(band[..., i1] * f)


def bilinear_runs(in_len: int, out_len: int, start: int = 0, stop: int | None = None) -> list[tuple[int, int, int, int]]:
    """Outputs ``start:stop`` of a bilinear resize (:func:`linear_taps`) grouped into runs that read the same two
    source indices: [(s, e, i0, i1)], outputs s:e (absolute), in order. An enlargement by k has about k outputs
    per run, so a run is one broadcast operation instead of k gathers."""
    stop = out_len if stop is None else stop
    i0, i1, _ = linear_taps(in_len, out_len, start, stop)
    change = torch.nonzero((i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])).flatten() + 1
    bounds = [0, *change.tolist(), len(i0)]
    i0, i1 = i0.tolist(), i1.tolist()
    return [(start + s, start + e, i0[s], i1[s]) for s, e in zip(bounds, bounds[1:])]


def grow_scratch_bytes(x_shape: Sequence[int], size: Sequence[int], rows: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of scratch :func:`grow_bilinear` needs for x of shape (…, h, w) and ``dtype``, output ``size`` and a
    band of ``rows`` output rows: its source rows resized along the columns (float64, then in x's dtype) and
    their differences."""
    lead = math.prod(int(n) for n in x_shape[:-2])
    src_rows = min(int(x_shape[-2]), math.ceil(rows * x_shape[-2] / int(size[0])) + 2)
    m = lead * src_rows * int(size[1])
    return 8 * m + 2 * m * torch.empty((), dtype=dtype).element_size()


def grow_bilinear(x: torch.Tensor, size: Sequence[int], out: torch.Tensor, rows: tuple[int, int] | None = None,
                  scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``rows`` (default all) of ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` (no
    antialiasing) written into ``out``; returns ``out``.

    x: …×h×w float32 (or float64); out: contiguous …×(r1-r0)×W, any float dtype (float16: the values are rounded
    once, on the write). ``scratch``: optional uint8 tensor of at least :func:`grow_scratch_bytes`, reused across
    calls (fresh large allocations cost page faults comparable to the arithmetic).

    Separable: the columns are resized first on the few source rows the band reads (torch's kernel in float64,
    whose sample positions are exact where float32 ones are off by up to ~1e-5 cells at a few thousand columns;
    scale 1 along the rows), then each run of output rows with the same two source rows (:func:`bilinear_runs`) is
    ``a + frac·(b − a)`` in x's dtype, one broadcast multiply-add that writes straight into ``out``. Agrees with a
    float64 oracle to a few roundings of x's dtype (so float16 outputs are correctly rounded but for ties).
    """
    H, W = int(size[0]), int(size[1])
    r0, r1 = rows if rows is not None else (0, H)
    lead = tuple(x.shape[:-2])
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if tuple(out.shape) != (*lead, r1 - r0, W):
        raise ValueError(f"out must have shape {(*lead, r1 - r0, W)}, got {tuple(out.shape)}")
    runs = bilinear_runs(h, H, r0, r1)
    lo, hi = runs[0][2], max(r[3] for r in runs) + 1
    n = math.prod(lead)
    m = n * (hi - lo) * W
    item = x.element_size()
    need = 8 * m + 2 * m * item
    if scratch is None or scratch.numel() < need:
        scratch = torch.empty(need, dtype=torch.uint8, device=x.device)
    wide = scratch[:8 * m].view(torch.float64).view(1, n, hi - lo, W)
    torch.ops.aten.upsample_bilinear2d.out(x.reshape(1, n, h, w)[..., lo:hi, :].double(), [hi - lo, W], False,
                                           None, None, out=wide)
    cols = scratch[8 * m:8 * m + m * item].view(x.dtype).view(n, hi - lo, W)
    cols.copy_(wide[0])
    diff = scratch[8 * m + m * item:need].view(x.dtype).view(n, hi - lo, W)[:, :-1]
    torch.sub(cols[:, 1:], cols[:, :-1], out=diff)
    frac = linear_taps(h, H, r0, r1)[2].to(device=x.device, dtype=x.dtype)
    flat = out.view(n, r1 - r0, W)
    for s, e, i0, i1 in runs:
        a = cols[:, i0 - lo, None, :]
        if i1 == i0:  # clamped at an edge: a copy
            flat[:, s - r0:e - r0].copy_(a.expand(-1, e - s, -1))
        else:
            torch.addcmul(a, frac[s - r0:e - r0].view(1, -1, 1), diff[:, i0 - lo, None, :], out=flat[:, s - r0:e - r0])
    return out


# grow_guided: elements of each of its two working blocks (16 MiB in float32). Measured on the 2-core CPU for a
# 2048×1536 output of 384 channels (docs/RESULTS.md): smaller blocks were slower, not faster (2**16: 1.6-7.4×,
# 2**18: 1.05-2.3×, 2**20: 1.2-1.4× the time of 2**22, the high ends with OMP_WAIT_POLICY=PASSIVE), since every
# operation's fixed cost (waking the threads) then outweighs what the cache saves.
GUIDED_GROW_BLOCK = 2**22


def grow_guided_bytes(channels: int, guide_channels: int, width: int, block_elements: int = GUIDED_GROW_BLOCK,
                      dtype: torch.dtype = torch.float32) -> int:
    """Bytes :func:`grow_guided` works in for ``channels`` coefficient maps of ``guide_channels`` slopes and an
    output ``width``, whatever the output's height: its two blocks, and about seven C×(k+1)×W rows (two source
    rows resized along the columns, their difference, and the resize's temporaries)."""
    item = torch.empty((), dtype=dtype).element_size()
    return item * (2 * max(block_elements, width) + 7 * channels * (guide_channels + 1) * width)


def grow_guided(a: torch.Tensor, b: torch.Tensor, guide: torch.Tensor, out: torch.Tensor,
                rows: tuple[int, int] | None = None, block_elements: int = GUIDED_GROW_BLOCK) -> torch.Tensor:
    """Rows ``rows`` (default all) of the guided filter's last step, ``up(b) + Σ_k up(a_k)·guide_k`` with ``up``
    ``F.interpolate(…, (H, W), mode="bilinear", align_corners=False)`` (:func:`wrcup.ops.guided.apply_guided` of
    the enlarged coefficients), written into ``out``; returns ``out``.

    a: C×k×h×w and b: C×h×w coefficients (:func:`wrcup.ops.guided.fit_guided`), float32 or float64; guide: k×H×W
    at the output size (H×W), same dtype; out: contiguous C×(r1-r0)×W, any float dtype (rounded once, on the write).

    Why not enlarge the coefficients and then apply them (what the chunked writer did before): that writes k+1
    output-sized float32 maps per chunk and reads them back, so memory traffic set the time (2.1× this function's
    on a 2048×1536 output, docs/BENCHMARKS.md). Here each run of output rows that reads the same two source rows
    (:func:`bilinear_runs`) is cut into blocks of channels × rows of at most ``block_elements``; a block's enlarged
    coefficients are ``A + frac·D`` (A, D: the two source rows resized along the columns once for every channel,
    and their difference), accumulated in two block-sized buffers, and only the finished block is written to
    ``out``. Column positions are computed in float64 (as :func:`grow_bilinear`), the arithmetic is in a's dtype.
    """
    C, k, h, w = (int(n) for n in a.shape)
    H, W = int(guide.shape[-2]), int(guide.shape[-1])
    r0, r1 = rows if rows is not None else (0, H)
    if tuple(b.shape) != (C, h, w) or tuple(guide.shape) != (k, H, W):
        raise ValueError(f"b must be C×h×w {(C, h, w)} and guide k×H×W with k = {k}, got b {tuple(b.shape)} and "
                         f"guide {tuple(guide.shape)}")
    if tuple(out.shape) != (C, r1 - r0, W):
        raise ValueError(f"out must have shape {(C, r1 - r0, W)}, got {tuple(out.shape)}")
    dtype = a.dtype
    x0, x1, fx = (t.to(a.device) for t in linear_taps(w, W))
    fx = fx.to(dtype)
    fy = linear_taps(h, H, r0, r1)[2].to(device=a.device, dtype=dtype)

    def source_row(i: int) -> torch.Tensor:
        """Row i of every coefficient map (slopes, then the intercept) resized along the columns: C×(k+1)×W."""
        row = torch.cat([a[:, :, i], b[:, None, i]], dim=1).reshape(C * (k + 1), w).t().contiguous()
        # gathered as whole rows of the transpose: gathering along the last dimension is ~10× slower
        cols = torch.lerp(row.index_select(0, x0), row.index_select(0, x1), fx[:, None])  # W×C(k+1)
        return cols.t().contiguous().view(C, k + 1, W)

    work = torch.empty(2 * max(block_elements, W), dtype=dtype, device=a.device)
    rows_now = {}
    for s, e, i0, i1 in bilinear_runs(h, H, r0, r1):
        rows_now = {i: rows_now[i] if i in rows_now else source_row(i) for i in (i0, i1)}  # consecutive runs share one
        base = rows_now[i0]
        diff = rows_now[i1] - base
        base, diff = base[:, :, None], diff[:, :, None]                                  # C×(k+1)×1×W
        # channels per block for this run's length, then rows per block when one channel's run is too large
        n = max(1, min(C, block_elements // ((e - s) * W)))
        step = max(1, min(e - s, block_elements // (n * W)))
        for c0 in range(0, C, n):
            c1 = min(C, c0 + n)
            for t0 in range(s, e, step):
                t1 = min(e, t0 + step)
                shape = (c1 - c0, t1 - t0, W)
                numel = math.prod(shape)
                acc, grown = work[:numel].view(shape), work[numel:2 * numel].view(shape)
                f = fy[t0 - r0:t1 - r0].view(1, -1, 1)
                torch.addcmul(base[c0:c1, k], f, diff[c0:c1, k], out=acc)                 # up(b)
                for g in range(k):
                    torch.addcmul(base[c0:c1, g], f, diff[c0:c1, g], out=grown)          # up(a_g)
                    acc.addcmul_(grown, guide[g:g + 1, t0:t1])
                out[c0:c1, t0 - r0:t1 - r0].copy_(acc)  # rounded once, here (addcmul into a float16 out
                # would round the same but allocate a float32 temporary each time)
    return out


def pass_bytes(grid_hw: Sequence[int], dim: int, batch: int = 1) -> int:
    """Working memory (bytes) of one untiled 2× pass from grid (h, w): its input, its output and the network's
    activations (see :data:`PASS_BYTES_PER_CELL_CHANNEL`), float32."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    return batch * 4 * h * w * dim * PASS_BYTES_PER_CELL_CHANNEL


def choose_tile(grid_hw: Sequence[int], dim: int, max_memory: int, overlap: int = DEFAULT_OVERLAP,
                batch: int = 1) -> int | None:
    """The tile side (in cells of the pass's input grid) for one pass from grid (h, w) within ``max_memory`` bytes,
    or None when the untiled pass fits. The pass's input and output stay in memory whole (the output is what the
    tiles are blended into): they are budgeted first, the tile's activations get the rest."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    if pass_bytes((h, w), dim, batch) <= max_memory:
        return None
    whole = batch * 4 * dim * (h * w + 4 * h * w) + batch * 4 * 4 * h * w  # input, output, weight sums
    left = max_memory - whole
    per_cell = pass_bytes((1, 1), dim, batch)
    side = int(math.isqrt(max(left, 0) // per_cell)) if left > 0 else 0
    floor = 2 * overlap + 8  # a tile must keep something after its ramps
    if side < floor:
        raise MemoryError(f"max_memory={max_memory / 2**30:.2f} GiB is too small for a pass from the grid {h}×{w} "
                          f"with {dim} channels (its input and output alone need {whole / 2**30:.2f} GiB)")
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

    budget = max(max_memory - RESERVED_BYTES, 0)
    passes = plan_passes(tuple(features.shape[-2:]), (int(size[0]), int(size[1])))
    if learned_passes is not None:
        passes = min(passes, learned_passes)
    quarter = upsampler.image_branch.quarter_map(image) if isinstance(upsampler, WRCUpsampler) and passes else None
    x = features
    for i in range(passes):
        patch = upsampler.patch_size / 2**i
        tile = choose_tile(tuple(x.shape[-2:]), x.shape[1], budget, overlap, batch=x.shape[0])
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
