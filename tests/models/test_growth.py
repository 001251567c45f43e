"""wrcup.models.growth: exact crops of bilinear resizes, the banded bilinear growth and the guided last step, each
against a float64 transcription."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wrcup.models.growth import (bilinear_runs, grow_bilinear, grow_guided, grow_guided_bytes, grow_scratch_bytes,
                                 linear_taps, resize_crop)


@pytest.mark.parametrize("src, dst", [((7, 9), (20, 31)), ((32, 43), (128, 172)), ((20, 20), (13, 7)),
                                      ((5, 6), (5, 6))])
def test_resize_crop_equals_the_crop_of_the_whole_resize(src, dst):
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    whole = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    rng = np.random.default_rng(0)
    for _ in range(10):
        r0, r1 = sorted(rng.choice(dst[0] + 1, 2, replace=False))
        c0, c1 = sorted(rng.choice(dst[1] + 1, 2, replace=False))
        crop = resize_crop(x, dst, (int(r0), int(r1)), (int(c0), int(c1)))
        torch.testing.assert_close(crop, whole[..., r0:r1, c0:c1], rtol=0, atol=1e-12)
    i0, i1, f = linear_taps(src[0], dst[0])
    assert i0.min() >= 0 and i1.max() <= src[0] - 1 and f.min() >= 0 and f.max() < 1


@pytest.mark.parametrize("in_len, out_len, start, stop", [(128, 1536, 0, 1536), (7, 20, 3, 17), (5, 5, 0, 5),
                                                           (20, 13, 2, 9), (1, 9, 0, 9), (43, 2048, 100, 101)])
def test_bilinear_runs_partition_the_outputs_by_their_source_pair(in_len, out_len, start, stop):
    runs = bilinear_runs(in_len, out_len, start, stop)
    i0, i1, _ = linear_taps(in_len, out_len, start, stop)
    assert runs[0][0] == start and runs[-1][1] == stop
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    for s, e, a, b in runs:
        assert s < e and (i0[s - start:e - start] == a).all() and (i1[s - start:e - start] == b).all()
    for (_, _, a, b), (_, _, c, d) in zip(runs, runs[1:]):   # maximal: neighbours read different pairs
        assert (a, b) != (c, d)


@pytest.mark.parametrize("src, dst, bands", [
    ((7, 9), (20, 31), [(0, 20)]),
    ((13, 17), (157, 203), [(0, 50), (50, 51), (51, 157)]),          # scale not an integer; a one-row band
    ((32, 43), (384, 516), [(0, 7), (7, 200), (200, 384)]),           # 12×, bands cut inside runs
    ((5, 6), (5, 6), [(0, 5)]), ((20, 20), (13, 7), [(0, 4), (4, 13)]),  # same size; a shrink (no antialias)
    ((1, 1), (9, 4), [(0, 9)]), ((2, 3), (11, 12), [(0, 1), (1, 10), (10, 11)]),
])
def test_grow_bilinear_equals_a_float64_oracle_to_float16_precision(src, dst, bands):
    """The fast path (float16 output) vs ``F.interpolate`` in float64: every value within half a float16 unit in
    the last place of the oracle (plus float32 rounding); float32 output within a few float32 roundings of the
    oracle and equal to the old exact-crop path (:func:`resize_crop`) up to that path's own error, band by band."""
    torch.manual_seed(0)
    x64 = torch.randn(3, 4, *src, dtype=torch.float64) * 3
    x = x64.float()
    oracle = F.interpolate(x.double(), size=dst, mode="bilinear", align_corners=False)
    scratch = torch.empty(grow_scratch_bytes(x.shape, dst, max(r1 - r0 for r0, r1 in bands)), dtype=torch.uint8)
    half = torch.cat([grow_bilinear(x, dst, torch.empty(3, 4, r1 - r0, dst[1], dtype=torch.float16), (r0, r1), scratch)
                      for r0, r1 in bands], dim=-2)
    ulp = torch.from_numpy(np.spacing(oracle.abs().numpy().astype(np.float16)).astype(np.float64))
    assert ((half.double() - oracle).abs() <= 0.5 * ulp + 1e-6 * float(x.abs().max())).all()
    single = torch.cat([grow_bilinear(x, dst, torch.empty(3, 4, r1 - r0, dst[1]), (r0, r1)) for r0, r1 in bands], -2)
    old = torch.cat([resize_crop(x, dst, (r0, r1), (0, dst[1])) for r0, r1 in bands], dim=-2)
    scale = float(x.abs().max())   # a few float32 roundings of values of this size
    torch.testing.assert_close(single.double(), oracle, rtol=0, atol=1e-6 * scale)
    # the old path computes float32 sample positions (off by ~1e-5 cells at a few hundred columns when the scale
    # is not a power-of-two fraction): equal to it up to its own error
    assert ((single - old).abs().double() <= (old.double() - oracle).abs() + 1e-6 * scale).all()
    with pytest.raises(ValueError, match="out must have shape"):
        grow_bilinear(x, dst, torch.empty(3, 4, 2, dst[1]), (0, 1))


def _guided_oracle(a, b, guide):
    """The guided filter's last step transcribed: every coefficient map enlarged by ``F.interpolate`` in float64,
    then ``b + Σ_g a_g·guide_g`` pixel by pixel."""
    C, k, h, w = a.shape
    size = tuple(guide.shape[-2:])
    up = lambda x: F.interpolate(x[None].double(), size=size, mode="bilinear", align_corners=False)[0]
    a_up = up(a.reshape(C * k, h, w)).view(C, k, *size)
    return up(b) + (a_up * guide.double()[None]).sum(dim=1)


@pytest.mark.parametrize("k, src, dst, rows, block", [
    (3, (7, 9), (23, 40), None, 2**18),          # whole output in one block per run
    (3, (7, 9), (23, 40), (3, 17), 64),          # a band; blocks of one channel and fewer rows than a run
    (1, (4, 5), (4, 5), None, 8),                # no growth, a grey guide, blocks narrower than a row
    (3, (6, 8), (13, 9), (0, 13), 50),           # growth by a non-integer factor, clamped edges
    (3, (3, 3), (100, 70), (10, 90), 300),       # long runs cut into row blocks
    (3, (1, 1), (9, 4), None, 2**18),            # a single source cell
])
def test_grow_guided_equals_the_transcribed_guided_step(k, src, dst, rows, block):
    """float64 arithmetic: equal to the oracle to rounding; float16 output: within half a float16 unit in the last
    place of the oracle (plus float32 arithmetic)."""
    torch.manual_seed(0)
    C = 5
    a64, b64 = torch.randn(C, k, *src, dtype=torch.float64), torch.randn(C, *src, dtype=torch.float64)
    guide64 = torch.rand(k, *dst, dtype=torch.float64)
    r0, r1 = rows if rows is not None else (0, dst[0])
    oracle = _guided_oracle(a64, b64, guide64)[:, r0:r1]
    out64 = grow_guided(a64, b64, guide64, torch.empty(C, r1 - r0, dst[1], dtype=torch.float64), rows, block)
    torch.testing.assert_close(out64, oracle, rtol=0, atol=1e-12)
    half = grow_guided(a64.float(), b64.float(), guide64.float(), torch.empty(C, r1 - r0, dst[1], dtype=torch.float16),
                       rows, block)
    ulp = torch.from_numpy(np.spacing(oracle.abs().numpy().astype(np.float16)).astype(np.float64))
    assert ((half.double() - oracle).abs() <= 0.5 * ulp + 1e-6 * float(oracle.abs().max())).all()


def test_grow_guided_checks_shapes_and_sizes_its_memory():
    a, b, guide = torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5), torch.zeros(3, 8, 10)
    with pytest.raises(ValueError, match="out must have shape"):
        grow_guided(a, b, guide, torch.empty(2, 8, 9))
    with pytest.raises(ValueError, match="guide k×H×W"):
        grow_guided(a, b, torch.zeros(1, 8, 10), torch.empty(2, 8, 10))
    assert grow_guided_bytes(384, 3, 2048) == 4 * (2 * 2**22 + 7 * 384 * 4 * 2048)   # 88 MiB: no output-sized copy
