"""Growth of feature maps to a larger size without the network: exact bilinear resizing of any crop, and the
image-guided last step, computed into preallocated outputs of any float dtype band by band, so that outputs too
large to hold twice (features at a photo's own resolution) never are.

- :func:`linear_taps`: the two source indices and the weight of each output index of a bilinear resize
  (``align_corners=False``, as :func:`torch.nn.functional.interpolate`), so any crop of a resized map can be
  computed from the map without resizing all of it (:func:`resize_crop`).
- :func:`bilinear_runs` / :func:`grow_bilinear`: the same resize computed fast into a preallocated output of any
  float dtype: columns first on the few source rows a band needs, then each run of output rows that reads the
  same two source rows in one broadcast multiply-add (float32 arithmetic, one rounding to the output's dtype).
- :func:`grow_guided`: the image-guided last step (:mod:`wrcup.ops.guided`) computed the same way, block by block,
  without enlarging its coefficient maps to the output size.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["linear_taps", "resize_crop", "bilinear_runs", "grow_bilinear", "grow_scratch_bytes", "grow_guided",
           "grow_guided_bytes", "GUIDED_GROW_BLOCK"]


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
