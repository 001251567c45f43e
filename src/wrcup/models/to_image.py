"""Features at a photo's own resolution, streamed into a float16 ``.npy`` file in bounded memory (``--to-image``).

The learned passes run as in :func:`wrcup.models.tiling.learned_grid` (tiled when over the budget); the bilinear
growth to the output size then goes chunk by chunk, each chunk a contiguous piece of the C×H×W file (whole
channels when one fits, else rows of one channel), so every chunk is one sequential write. The growth
(:func:`~wrcup.models.growth.grow_bilinear`) writes float16 straight into one of two preallocated buffers while a
writer thread writes the other to the file: computing and writing overlap, and no large buffer is allocated
twice (on a loaded machine a fresh 2.4 GB costs as much page-fault time as the arithmetic).

The growth is either plain bilinear (``final_step="bilinear"``) or image-guided (``"guided"``, the default of
``--to-image``): :mod:`wrcup.ops.guided` fits, on the learned grid, the features as a local affine function of the
photo's colour, and the chunk is that function's coefficients grown bilinearly and applied to the photo at the
output resolution (:func:`~wrcup.models.growth.grow_guided`, in blocks of channels × rows, never as
output-sized float32 maps), so feature edges follow the photo's edges instead of spreading over the growth factor.
"""
from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Sequence

import torch

from .growth import grow_bilinear, grow_guided, grow_guided_bytes, grow_scratch_bytes
from .tiling import DEFAULT_MAX_MEMORY, DEFAULT_OVERLAP, RESERVED_BYTES, learned_grid

__all__ = ["CHUNK_BYTES", "FINAL_STEPS", "plan_chunks", "npy_header", "ToImageResult", "write_features_npy"]

# Bytes of float16 output per chunk (two such buffers are held): large enough that per-call overheads vanish,
# small enough that computing one chunk overlaps writing the previous one.
CHUNK_BYTES = 64 * 2**20
# How the last (non-learned) growth to the output size is made.
FINAL_STEPS = ("guided", "bilinear")


def plan_chunks(shape: Sequence[int], chunk_bytes: int = CHUNK_BYTES, itemsize: int = 2) -> list[tuple[int, int, int, int]]:
    """Chunks (c0, c1, r0, r1) of a C×H×W array in file order, each a contiguous piece of it of at most
    ``chunk_bytes``: groups of whole channels when one channel fits, else bands of rows of one channel (at least
    one row each)."""
    C, H, W = (int(n) for n in shape)
    channel = H * W * itemsize
    if channel <= chunk_bytes:
        g = max(1, chunk_bytes // channel)
        return [(c, min(C, c + g), 0, H) for c in range(0, C, g)]
    rows = max(1, chunk_bytes // (W * itemsize))
    return [(c, c + 1, r, min(H, r + rows)) for c in range(C) for r in range(0, H, rows)]


def npy_header(shape: Sequence[int], descr: str = "<f2") -> bytes:
    """The .npy (format 1.0) header of a C-ordered array of ``shape`` and dtype ``descr``."""
    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": tuple(int(n) for n in shape)})
    return buf.getvalue()


@dataclass
class ToImageResult:
    """What :func:`write_features_npy` did. ``reduced``: C×⌈H/k⌉×⌈W/k⌉ float32, every k-th row and column of the
    output (for a picture; the features are smooth at that scale). Times in seconds: ``learned_s`` the learned
    passes, ``growth_s`` computing the bilinear growth, ``write_s`` the writer thread inside write calls (overlaps
    the growth), ``wait_s`` the growth waiting for the writer, ``total_s`` all of it."""

    reduced: torch.Tensor
    k: int
    learned_grid: tuple[int, int]
    chunks: int
    learned_s: float = 0.0
    growth_s: float = 0.0
    write_s: float = 0.0
    wait_s: float = 0.0
    total_s: float = 0.0


def write_features_npy(f: BinaryIO, upsampler, image: torch.Tensor, features: torch.Tensor, size: Sequence[int], *,
                       max_memory: int = DEFAULT_MAX_MEMORY, learned_passes: int | None = None, figure_side: int = 512,
                       overlap: int = DEFAULT_OVERLAP, chunk_bytes: int = CHUNK_BYTES, final_step: str = "bilinear",
                       guide_image: torch.Tensor | None = None) -> ToImageResult:
    """Write the upsampled features of one image as a float16 .npy of shape C×H×W into the open file ``f`` (at its
    current position, sequentially) and return a :class:`ToImageResult`.

    image: 1×3×(p·h)×(p·w) backbone-normalised; features: 1×C×h×w; size: (H, W). The values equal
    ``upsample_bounded(upsampler, image, features, size, …)`` rounded to float16 (to within float32 rounding).
    Memory: the learned passes within ``max_memory`` as in :func:`~wrcup.models.tiling.learned_grid`; then about
    ``chunk_bytes`` (less when the budget is small) for one chunk and the growth's scratch, one more chunk being
    written, and the reduced copy.

    ``final_step``: ``"bilinear"`` (the values above) or ``"guided"``, which needs ``guide_image``, the photo as
    3×H×W (the output size) in [0, 1]: the growth is then :func:`wrcup.ops.guided.guided_upsample`'s, computed
    chunk by chunk (equal to it to within float32 rounding, before the float16 rounding) by
    :func:`~wrcup.models.growth.grow_guided`, which works in blocks of fixed size (:func:`~wrcup.models.growth.grow_guided_bytes`),
    so the guided chunks are as large as the bilinear ones; the coefficients (three slopes and an intercept per
    channel on the learned grid) are held whole, 4× the learned grid's features, and fitted in blocks of channels
    (:func:`wrcup.ops.guided.fit_guided`).
    """
    from .._checks import check_choice, check_tensor
    from ..ops.guided import fit_guided
    from .sizing import resize_features

    check_choice(final_step, "final_step", FINAL_STEPS)

    if features.shape[0] != 1:
        raise ValueError(f"features must hold one image (1×C×h×w), got shape {tuple(features.shape)}")
    H, W = int(size[0]), int(size[1])
    if final_step == "guided":
        if guide_image is None:
            raise ValueError('final_step="guided" needs guide_image, the photo as 3×H×W in [0, 1] at the output size')
        check_tensor(guide_image, "guide_image", 3)
        if tuple(guide_image.shape) != (3, H, W):
            raise ValueError(f"guide_image must be 3×{H}×{W} (RGB at the output size), got {tuple(guide_image.shape)}")
    t0 = time.perf_counter()
    x = learned_grid(upsampler, image, features, (H, W), max_memory, learned_passes, overlap)
    grid = (int(x.shape[-2]), int(x.shape[-1]))
    if grid[0] > H or grid[1] > W:  # a shrink along some direction: antialiased, computed whole (rare, small)
        x = resize_features(x, (H, W))
    x = x[0].float().contiguous()
    C = x.shape[0]
    t1 = time.perf_counter()

    budget = max(max_memory - RESERVED_BYTES, 0)
    grows = tuple(x.shape[-2:]) != (H, W)
    guided = grows and final_step == "guided"
    if guided:
        photo = guide_image.to(device=x.device, dtype=x.dtype)
        coef_a, coef_b = (t[0] for t in fit_guided(x[None], photo[None]))
        # the guided growth works in a fixed amount of memory, whatever the chunk
        budget = max(budget - grow_guided_bytes(C, photo.shape[0], W, dtype=x.dtype), 0)
    chunk_bytes = max(min(chunk_bytes, budget // 4), 2 * W)
    if grows and not guided:  # the bilinear growth's scratch counts against the chunk: shrink it in proportion
        per_channel = 2 * H * W
        extra = grow_scratch_bytes((1, *x.shape[-2:]), (H, W), H)
        chunk_bytes = max(2 * W, chunk_bytes * per_channel // (per_channel + extra))
    chunks = plan_chunks((C, H, W), chunk_bytes)
    cap = max((c1 - c0) * (r1 - r0) * W for c0, c1, r0, r1 in chunks)
    buffers = [torch.empty(cap, dtype=torch.float16) for _ in range(min(2, len(chunks)))]
    # on an accelerator the growth runs there, into one device buffer copied to the host buffer per chunk
    on_host = x.device.type == "cpu"
    work = None if on_host else torch.empty(cap, dtype=torch.float16, device=x.device)
    scratch = None
    if grows and not guided:
        c0, c1, r0, r1 = chunks[0]
        scratch = torch.empty(grow_scratch_bytes((c1 - c0, *x.shape[-2:]), (H, W), r1 - r0), dtype=torch.uint8,
                              device=x.device)
    k = -(-max(H, W) // figure_side)
    reduced = torch.zeros(C, -(-H // k), -(-W // k))

    f.write(npy_header((C, H, W)))
    write_s = []

    def write(view: memoryview) -> None:
        start = time.perf_counter()
        f.write(view)
        write_s.append(time.perf_counter() - start)

    growth_s = wait_s = 0.0
    pending = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wrcup-npy-writer") as writer:
        for i, (c0, c1, r0, r1) in enumerate(chunks):
            if i >= 2:  # the buffer is free once the write two chunks back has finished
                start = time.perf_counter()
                pending[i - 2].result()
                wait_s += time.perf_counter() - start
            start = time.perf_counter()
            n = (c1 - c0) * (r1 - r0) * W
            out = buffers[i % 2][:n].view(c1 - c0, r1 - r0, W)
            target = out if on_host else work[:n].view(c1 - c0, r1 - r0, W)
            if guided:
                grow_guided(coef_a[c0:c1], coef_b[c0:c1], photo, target, (r0, r1))
            elif grows:
                grow_bilinear(x[c0:c1], (H, W), target, (r0, r1), scratch)
            else:
                target.copy_(x[c0:c1, r0:r1])
            if not on_host:
                out.copy_(target)
            first = -r0 % k  # the chunk's first row on the every-k-th grid, then every k-th: a strided copy
            taken = len(range(first, r1 - r0, k))
            reduced[c0:c1, (r0 + first) // k:(r0 + first) // k + taken].copy_(out[:, first::k, ::k])
            growth_s += time.perf_counter() - start
            pending.append(writer.submit(write, memoryview(out.numpy()).cast("B")))
        for p in pending[-2:]:
            p.result()  # raises the writer's error, if any
    t2 = time.perf_counter()
    return ToImageResult(reduced=reduced, k=k, learned_grid=grid, chunks=len(chunks), learned_s=t1 - t0,
                         growth_s=growth_s, write_s=sum(write_s), wait_s=wait_s, total_s=t2 - t0)
