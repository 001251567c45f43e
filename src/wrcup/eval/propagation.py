"""Semi-supervised video object segmentation by label propagation (DINO's protocol).

Given per-frame feature maps and the first frame's label map, every later frame's labels are predicted from
its feature affinities to a queue of context frames: the first frame (ground truth) and the previous
``n_last`` predicted frames (soft labels). This follows ``eval_video_segmentation.py`` of DINO
(Caron et al., 2021), which the WRC paper uses for its DAVIS numbers:

1. features of every frame are L2-normalised over channels;
2. the first frame's labels are downsampled to the feature grid by *nearest* sampling (DINO resizes the
   annotation with PIL's nearest filter, which samples the pixel under each cell centre) and one-hot encoded;
3. affinity between a target cell and a context cell is ``exp(cos / temperature)``; only context cells within a
   ``(2 * radius + 1)²`` square window around the target cell's position count (DINO's
   ``size_mask_neighborhood = 12``);
4. per target cell, the ``topk = 5`` largest affinities over *all* context frames together are kept (ties at
   the k-th value are all kept, as DINO's threshold does), normalised to sum to one, and the context labels are
   averaged with these weights; the soft result is queued as the frame's label for later frames;
5. the soft labels are upsampled bilinearly to frame size, each channel is min-max normalised (DINO's
   ``norm_mask``; ``normalize_channels=False`` skips it) and the argmax gives the prediction.

Temperature: DINO's script hard-codes ``0.1`` (it is not a command-line option there) and the WRC paper states
``exp(cosine / 0.1)``; both agree, so the default is ``0.1``.

Memory: affinities are formed in tiles of target cells against only the context cells that the window can
reach, so large (upsampled) feature grids never need an ``hw × hw`` matrix; the neighbourhood masks of the
tiles are built once per grid size and reused for every frame.

Speed: the matrix products dominate (≈ 75 % of a frame). A tile of targets wider than the window's excess
wastes products on context cells outside every target's window, but a matrix product with more target rows runs
closer to the CPU's peak; :func:`local_tile_side` picks the side by the radius from measurements
(``benchmarks/propagation.py``). Every cosine is the same dot product whatever the tiling, so the soft labels do
not depend on it (bit-identical in the benchmark's runs).
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._checks import check_choice, check_finite, check_positive_int, check_tensor

__all__ = ["propagate_labels", "downsample_labels", "propagate_frame"]


def _check_size(size, name: str) -> tuple[int, int]:
    if isinstance(size, torch.Size):
        size = tuple(size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {size!r}")
    for v in size:
        check_positive_int(v, name)
    return int(size[0]), int(size[1])


def _check_labels(labels, name: str) -> torch.Tensor:
    check_tensor(labels, name, 2, floating=False)
    if labels.dtype in (torch.bool, torch.complex64, torch.complex128) or labels.is_floating_point():
        raise TypeError(f"{name} must be an integer tensor (int64 label map), got {labels.dtype}")
    if bool((labels < 0).any()):
        raise ValueError(f"{name} must hold non-negative label ids")
    return labels


def downsample_labels(labels: torch.Tensor, grid_size, ids: torch.Tensor | None = None,
                      mode: str = "nearest") -> torch.Tensor:
    """One-hot label map on the feature grid.

    Args:
        labels: int64 ``H×W`` label map (any non-negative ids, e.g. DAVIS 2016's 0/255).
        grid_size: ``(h, w)`` of the feature grid.
        ids: sorted label ids that define the channels (default: the ids present in ``labels``).
        mode: ``"nearest"`` (DINO: the label under each cell centre, like PIL's nearest resize) or ``"area"``
            (soft: the share of each label in the cell, by area averaging).
    Returns:
        float32 ``K×h×w`` one-hot (``nearest``) or soft (``area``) map, ``K = len(ids)``.
    """
    _check_labels(labels, "labels")
    h, w = _check_size(grid_size, "grid_size")
    check_choice(mode, "mode", ("nearest", "area"))
    if ids is None:
        ids = torch.unique(labels)
    index = torch.searchsorted(ids, labels.contiguous())
    index = index.clamp_max(len(ids) - 1)
    if not bool((ids[index] == labels).all()):
        raise ValueError("labels contains ids that are not in ids")
    one_hot = F.one_hot(index, len(ids)).permute(2, 0, 1).float()[None]
    # nearest-exact samples floor((i + 0.5) * H / h): the pixel under the cell centre, as PIL does
    resized = F.interpolate(one_hot, size=(h, w), mode="nearest-exact" if mode == "nearest" else "area")
    return resized[0]


def _neighbourhood_plan(h: int, w: int, radius: int | None, tile: tuple[int, int], device) -> list:
    """Tiles of the target grid, the context region their windows reach, and the window masks.

    Returns a list of ``(i0, i1, j0, j1, s0, s1, t0, t1, valid)``: targets are the cells of rows ``[i0, i1)`` and
    columns ``[j0, j1)``, the reachable context cells those of rows ``[s0, s1)`` and columns ``[t0, t1)``, and
    ``valid`` is the bool ``targets × sources`` mask of the square window ``|Δrow| ≤ radius, |Δcol| ≤ radius``.
    """
    tile_h, tile_w = tile
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    reach = max(h, w) if radius is None else radius
    plan = []
    # column-major, so that consecutive tiles share their column band of context cells
    for j0 in range(0, w, tile_w):
        j1 = min(w, j0 + tile_w)
        t0, t1 = max(0, j0 - reach), min(w, j1 + reach)
        col_ok = (cols[j0:j1, None] - cols[None, t0:t1]).abs() <= reach
        for i0 in range(0, h, tile_h):
            i1 = min(h, i0 + tile_h)
            s0, s1 = max(0, i0 - reach), min(h, i1 + reach)
            row_ok = (rows[i0:i1, None] - rows[None, s0:s1]).abs() <= reach
            # the 2-D window factorises into a row band and a column band
            valid = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(
                (i1 - i0) * (j1 - j0), (s1 - s0) * (t1 - t0))
            plan.append((i0, i1, j0, j1, s0, s1, t0, t1, valid))
    return plan


def local_tile_side(radius: int) -> int:
    """Side of the square target tiles for a local window of ``radius`` cells: radius // 3 within [12, 16].

    Measured per frame (``benchmarks/propagation.py``, 8 context frames, 384 channels, one thread, AMD EPYC):
    against 8×8 tiles (a loaded machine, so roughly), 12×12 is 1.11× / 1.16× / 1.20× / 1.25× faster at radius 12 (32×57 cells) / 24 (64×114)
    / 48 (64×112) / 48 (128×228), 16×16 0.91× / 1.16× / 1.34× / 1.34×: the larger products win once the window
    is wide enough that the tile adds little to it."""
    return min(16, max(12, radius // 3))


def _tile_size(h: int, w: int, n_context: int, radius: int | None, max_elements: int,
               local_tile: int | None = None) -> tuple[int, int]:
    """Target tile shape: square tiles of ``local_tile`` (default :func:`local_tile_side`) when the window is
    local (less wasted affinity outside the window), row chunks of the whole grid otherwise; shrunk until one
    block holds at most ``max_elements``."""
    def block(th, tw):
        if radius is None:
            return th * tw * n_context * h * w
        return th * tw * n_context * min(h, th + 2 * radius) * min(w, tw + 2 * radius)

    if radius is None:
        th, tw = h, w
    else:
        side = local_tile_side(radius) if local_tile is None else local_tile
        th, tw = min(h, side), min(w, side)
    while block(th, tw) > max_elements and th * tw > 1:
        if th >= tw and th > 1:
            th = (th + 1) // 2
        else:
            tw = (tw + 1) // 2
    return th, tw


def propagate_frame(target: torch.Tensor, context_features: torch.Tensor, context_labels: torch.Tensor,
                    topk: int = 5, temperature: float = 0.1, radius: int | None = 12, *,
                    plan: list | None = None, max_block_elements: int = 2 ** 25) -> torch.Tensor:
    """Propagate soft labels from context frames to one target frame (one step of :func:`propagate_labels`).

    Args:
        target: ``C×h×w`` L2-normalised target features.
        context_features: ``T×C×h×w`` L2-normalised context features.
        context_labels: ``T×K×h×w`` soft labels of the context frames.
        topk, temperature, radius: as in :func:`propagate_labels`.
        plan: precomputed tiles and window masks for this grid (built here when None).
    Returns:
        ``K×h×w`` soft labels of the target (each cell's weights sum to one).
    """
    if plan is None:
        h, w = target.shape[-2:]
        tile = _tile_size(h, w, context_features.shape[0], radius, max_block_elements)
        plan = _neighbourhood_plan(h, w, radius, tile, target.device)
    n_ctx, channels, h, w = context_features.shape
    n_classes = context_labels.shape[1]
    out = target.new_empty(n_classes, h, w)
    band_key, band = None, None
    for i0, i1, j0, j1, s0, s1, t0, t1, valid in plan:
        if band_key != (t0, t1):
            # one contiguous copy per column band: every row range of it is then a plain matrix view,
            # instead of one strided copy of the context per tile
            band_key, band = (t0, t1), context_features[:, :, :, t0:t1].contiguous()
        tgt = target[:, i0:i1, j0:j1].reshape(channels, -1).T                     # nt × C
        n_src = (s1 - s0) * (t1 - t0)
        cos = tgt.new_empty(n_ctx, tgt.shape[0], n_src)                           # T × nt × ns
        for t in range(n_ctx):
            torch.mm(tgt, band[t, :, s0:s1].reshape(channels, n_src), out=cos[t])
        cos.masked_fill_(~valid, float("-inf"))
        labels = context_labels[:, :, s0:s1, t0:t1].reshape(n_ctx, n_classes, -1)  # T × K × ns
        labels = labels.permute(0, 2, 1).reshape(-1, n_classes)                    # T*ns × K
        out[:, i0:i1, j0:j1] = _weighted_topk(cos, labels, topk, temperature).T.reshape(
            n_classes, i1 - i0, j1 - j0)
    return out


def _weighted_topk(cos: torch.Tensor, labels: torch.Tensor, topk: int, temperature: float) -> torch.Tensor:
    """Soft labels of targets from their top-k affinities over all context frames together.

    Args:
        cos: ``T×nt×ns`` cosines of ``nt`` targets to ``ns`` candidate cells in each of ``T`` context frames,
            ``-inf`` outside the window.
        labels: ``(T·ns)×K`` labels of the candidates, frame-major.
    Returns:
        ``nt×K``: per target, the ``topk`` largest cosines (and any tied with the k-th, as DINO's threshold
        keeps them) weighted by ``exp(cos / temperature)`` normalised to sum to one, times their labels.
    """
    n_ctx, n_tgt, n_src = cos.shape
    k = min(topk, n_ctx * n_src)
    # the global top k+1 lies within the union of each frame's top k+1; the extra value reveals ties at the
    # k-th place, the only rows that need the full threshold
    per_frame = torch.topk(cos, min(k + 1, n_src), dim=2)                           # T × nt × k'
    merged = per_frame.values.permute(1, 0, 2).reshape(n_tgt, -1)
    top = torch.topk(merged, min(k + 1, merged.shape[1]), dim=1)
    frame = top.indices // per_frame.values.shape[2]
    index = frame * n_src + per_frame.indices.permute(1, 0, 2).reshape(n_tgt, -1).gather(1, top.indices)
    values, index = top.values[:, :k], index[:, :k]
    # exp of the shifted cosine is the same normalised weight as exp(cos / T) but cannot overflow for small
    # temperatures; -inf (outside the window) gives weight 0
    weights = torch.exp((values - values[:, :1]) / temperature)
    weights = weights / weights.sum(dim=1, keepdim=True)
    out = torch.einsum("nk,nkc->nc", weights, labels[index])
    if top.values.shape[1] > k:
        tied = (top.values[:, k] == values[:, -1]) & torch.isfinite(values[:, -1])
        if bool(tied.any()):
            rows = cos[:, tied].permute(1, 0, 2).reshape(int(tied.sum()), -1)
            keep = rows >= values[tied, -1:]
            w = torch.exp((rows - values[tied, :1]) / temperature) * keep
            out[tied] = (w / w.sum(dim=1, keepdim=True)) @ labels
    return out


def _soft_to_labels(soft: torch.Tensor, frame_size: tuple[int, int], ids: torch.Tensor,
                    normalize_channels: bool) -> torch.Tensor:
    up = F.interpolate(soft[None], size=frame_size, mode="bilinear", align_corners=False)[0]
    if normalize_channels:
        # DINO's norm_mask: min-max per channel that has any mass, before the argmax
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        scaled = (up - lo) / (hi - lo).clamp_min(torch.finfo(up.dtype).tiny)
        up = torch.where(hi > 0, scaled, up)
    return ids[up.argmax(dim=0)]


def propagate_labels(frame_features: Iterable[torch.Tensor], first_labels: torch.Tensor, frame_size,
                     n_last: int = 7, topk: int = 5, radius: int | None = 12, temperature: float = 0.1, *,
                     label_downsample: str = "nearest", normalize_channels: bool = True,
                     max_block_elements: int = 2 ** 25, progress: bool = True) -> Iterator[torch.Tensor]:
    """Stream label predictions for a video, one per frame (DINO's DAVIS protocol).

    Args:
        frame_features: list or iterator of ``C×h×w`` float feature maps, one per frame, the first one being the
            annotated frame; every map must have the same shape. Consumed lazily, one frame at a time.
        first_labels: int64 ``H×W`` label map of the first frame (background and K objects; any non-negative ids,
            e.g. DAVIS 2016's 0/255 or DAVIS 2017's 0..K).
        frame_size: ``(H, W)`` of the predictions.
        n_last: number of previous predicted frames kept as context, besides the first frame (DINO: 7).
        topk: neighbours kept per target cell over all context frames (DINO: 5).
        radius: half-size in grid cells of the square window of context cells a target cell may attend to
            (DINO's ``size_mask_neighborhood``: 12); ``None`` means no restriction. It is measured on the grid of
            the given features: with upsampled features, scale it if a window in low-resolution patches is meant.
        temperature: affinity ``exp(cos / temperature)`` (DINO's script and the WRC paper: 0.1).
        label_downsample: ``"nearest"`` (DINO) or ``"area"`` (soft one-hot by area averaging).
        normalize_channels: DINO's per-channel min-max normalisation of the upsampled soft labels before argmax.
        max_block_elements: upper bound on the size of one affinity block (targets × context cells).
        progress: show a tqdm bar over frames.
    Yields:
        int64 ``H×W`` label maps with the ids of ``first_labels``, for every frame including the first (which is
        ``first_labels`` itself, resized by nearest sampling if ``frame_size`` differs), so that the i-th
        prediction belongs to the i-th frame.
    """
    _check_labels(first_labels, "first_labels")
    frame_size = _check_size(frame_size, "frame_size")
    check_positive_int(n_last, "n_last", minimum=0)
    check_positive_int(topk, "topk")
    if radius is not None:
        check_positive_int(radius, "radius", minimum=0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    check_choice(label_downsample, "label_downsample", ("nearest", "area"))
    check_positive_int(max_block_elements, "max_block_elements")
    return _propagate(frame_features, first_labels, frame_size, n_last, topk, radius, float(temperature),
                      label_downsample, normalize_channels, max_block_elements, progress)


def _prepare(features, name: str, shape) -> torch.Tensor:
    check_tensor(features, name, 3)
    check_finite(features, name)
    if shape is not None and tuple(features.shape) != shape:
        raise ValueError(f"{name} must have the first frame's shape {shape}, got {tuple(features.shape)}")
    features = features.float() if features.dtype != torch.float64 else features
    return F.normalize(features, dim=0)


def _propagate(frame_features, first_labels, frame_size, n_last, topk, radius, temperature,
               label_downsample, normalize_channels, max_block_elements, progress):
    total = len(frame_features) if isinstance(frame_features, Sequence) else None
    frames = iter(frame_features)
    try:
        first = next(frames)
    except StopIteration:
        raise ValueError("frame_features must hold at least one frame") from None
    first = _prepare(first, "frame_features[0]", None)
    shape = tuple(first.shape)
    _, h, w = shape
    device = first.device
    ids = torch.unique(first_labels).to(device)
    first_soft = downsample_labels(first_labels.to(device), (h, w), ids, label_downsample).to(first.dtype)

    if tuple(first_labels.shape) == frame_size:
        yield first_labels.clone()
    else:
        resized = F.interpolate(first_labels[None, None].float(), size=frame_size, mode="nearest-exact")
        yield resized[0, 0].to(first_labels.dtype)

    queue: deque = deque(maxlen=n_last)
    # one plan per video: tiles sized for the longest context, window masks built once for this grid
    tile = _tile_size(h, w, 1 + n_last, radius, max_block_elements)
    plan = _neighbourhood_plan(h, w, radius, tile, device)
    with tqdm(total=None if total is None else total - 1, desc="propagate", disable=not progress,
              leave=False) as bar:
        for index, feats in enumerate(frames, start=1):
            target = _prepare(feats, f"frame_features[{index}]", shape)
            ctx_feats = torch.stack([first] + [f for f, _ in queue])
            ctx_labels = torch.stack([first_soft] + [s for _, s in queue])
            soft = propagate_frame(target, ctx_feats, ctx_labels, topk, temperature, plan=plan)
            if n_last > 0:
                queue.append((target, soft))
            yield _soft_to_labels(soft, frame_size, ids, normalize_channels).to(first_labels.device)
            bar.update(1)
