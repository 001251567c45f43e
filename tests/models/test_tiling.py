"""wrcup.models.tiling: tile plans, blending windows, memory plan; tiled vs untiled passes."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wrcup
from wrcup.data.images import load_image, resize_short_side
from wrcup.models import tiling
from wrcup.models.tiling import (blend_ramp, blend_window, choose_tile, learned_passes_to_guidance, parse_memory,
                                 pass_bytes, plan_tiles, tile_spans, tiled_pass, upsample_bounded)


@pytest.mark.parametrize("length, tile, overlap", [(10, 4, 1), (37, 16, 8), (16, 16, 4), (5, 16, 4), (100, 9, 0),
                                                   (33, 12, 5)])
def test_tile_spans_cover_the_grid_with_full_tiles_and_enough_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    covered = np.zeros(length, int)
    for start, stop in spans:
        assert 0 <= start < stop <= length and stop - start == min(tile, length)
        covered[start:stop] += 1
    assert covered.min() >= 1 and spans[0][0] == 0 and spans[-1][1] == length
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert stop - start >= overlap
    assert plan_tiles((length, 7), tile, overlap) == [(a, b, c, d) for a, b in spans
                                                      for c, d in tile_spans(7, tile, overlap)]


def test_tile_spans_reject_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        tile_spans(20, 4, 4)
    with pytest.raises(ValueError):
        tile_spans(0, 4, 1)


def test_blend_ramp_neighbours_sum_to_one_and_no_weight_is_zero():
    lead = blend_ramp(10, 4, 0)
    trail = blend_ramp(10, 0, 4)
    assert torch.all(lead > 0) and torch.all(trail > 0)
    assert torch.allclose(trail[-4:] + lead[:4], torch.ones(4))
    assert torch.equal(blend_ramp(6, 0, 0), torch.ones(6))


@pytest.mark.parametrize("grid, tile, overlap", [((37, 40), 16, 4), ((20, 20), 8, 2), ((12, 40), 12, 5)])
def test_blend_windows_of_all_tiles_sum_to_one(grid, tile, overlap):
    """With overlaps below half a tile, the ramps of neighbours cover the same cells: a partition of unity."""
    total = torch.zeros(2 * grid[0], 2 * grid[1])
    rows, cols = tile_spans(grid[0], tile, overlap), tile_spans(grid[1], tile, overlap)
    for spans in (rows, cols):  # only neighbours overlap (else the windows are normalised by their sum)
        assert all(a[1] <= c[0] for a, c in zip(spans, spans[2:]))
    for i, (y0, y1) in enumerate(rows):
        for j, (x0, x1) in enumerate(cols):
            total[2 * y0:2 * y1, 2 * x0:2 * x1] += blend_window(grid, tile, overlap, (i, j), scale=2)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_choose_tile_fits_the_budget():
    assert choose_tile((32, 43), 384, 2**30) is None
    budget = 2**30
    tile = choose_tile((256, 336), 384, budget)
    assert tile is not None and tile >= 2 * tiling.DEFAULT_OVERLAP + 8
    whole = 4 * 384 * 5 * 256 * 336 + 16 * 256 * 336
    assert whole + pass_bytes((tile, tile), 384) <= budget < whole + pass_bytes((tile + 1, tile + 1), 384)
    with pytest.raises(MemoryError, match="max_memory"):
        choose_tile((512, 672), 384, 2**30)


def test_choose_tile_names_the_smallest_budget_that_fits():
    grid, reserved = (96, 128), 2**30   # a 1344 x 1792 input's grid
    with pytest.raises(MemoryError, match=r"max_memory=1\.00 GiB is too small .* at least \d+ MiB") as exc:
        choose_tile(grid, 384, 2**30, reserved=reserved)
    need = int(re.search(r"at least (\d+) MiB", str(exc.value)).group(1)) * 2**20
    assert choose_tile(grid, 384, need, reserved=reserved) >= 2 * tiling.DEFAULT_OVERLAP + 8
    with pytest.raises(MemoryError):
        choose_tile(grid, 384, need - 2**20, reserved=reserved)


def test_parse_memory():
    assert parse_memory("4G") == parse_memory("4GB") == parse_memory("4 GiB".replace(" ", "")) == 4 * 2**30
    assert parse_memory("512m") == 512 * 2**20 and parse_memory(1000) == 1000 and parse_memory("1.5g") == 3 * 2**29
    for bad in ("lots", "-1G", "0", True):
        with pytest.raises(ValueError, match="max_memory"):
            parse_memory(bad)


def test_learned_passes_stop_at_the_guidance_resolution():
    assert learned_passes_to_guidance((32, 42), (448, 588)) == 2     # 128×168 ≥ 112×147
    assert learned_passes_to_guidance((2, 2), (28, 28)) == 2 and learned_passes_to_guidance((2, 2), (16, 16)) == 1


@pytest.fixture(scope="module")
def shipped():
    return wrcup.load()


@pytest.fixture(scope="module")
def photo_inputs(shipped, real_photos):
    """A real photo at a small size: the normalised image, its backbone features and the quarter map."""
    x = shipped.backbone.prepare(resize_short_side(load_image(real_photos[0])[None], 224).clamp(0, 1))
    with torch.inference_mode():
        image = shipped.backbone.normalise(x)
        features = shipped.backbone(x)
        quarter = shipped.upsampler.image_branch.quarter_map(image)
    return x, image, features, quarter


def test_tiled_pass_agrees_with_the_untiled_pass_on_a_real_photo(shipped, photo_inputs):
    """Second pass (grid 32×n, effective patch 7) on 16-cell tiles: mean per-pixel cosine ≥ 0.995."""
    _, _, features, quarter = photo_inputs
    up = shipped.upsampler
    with torch.inference_mode():
        grid = up.upsample_features(features, quarter, 14.0)
        untiled = up.upsample_features(grid, quarter, 7.0)
        tiled = tiled_pass(up, grid, quarter, 7.0, tile=16, overlap=tiling.DEFAULT_OVERLAP)
        plain = tiled_pass(up, grid, quarter, 7.0, tile=64)  # one tile: the untiled pass itself
    assert len(plan_tiles(grid.shape[-2:], 16, tiling.DEFAULT_OVERLAP)) >= 4
    cos = F.cosine_similarity(tiled, untiled, dim=1)
    assert cos.mean() >= 0.995 and cos.min() > 0.9
    torch.testing.assert_close(plain, untiled)


def test_bounded_model_output_tiles_when_the_budget_is_small(shipped, photo_inputs, monkeypatch):
    x = photo_inputs[0]
    with torch.inference_mode():
        ref = shipped(x, scale=4)
        assert torch.equal(shipped(x, scale=4, max_memory="64G"), ref)
        calls = []
        real = tiling.tiled_pass
        monkeypatch.setattr(tiling, "tiled_pass", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
        monkeypatch.setattr(tiling, "RESERVED_BYTES", 0)
        import wrcup.models.bundle as bundle
        monkeypatch.setattr(bundle, "RESERVED_BYTES", 0)
        gh, gw = 2 * (x.shape[-2] // 14), 2 * (x.shape[-1] // 14)     # the second pass's input grid
        small = 4 * 384 * 5 * gh * gw + 16 * gh * gw + pass_bytes((24, 24), 384)   # → 24-cell tiles
        tiled = shipped(x, scale=4, max_memory=small)
    assert calls[-1] == 24    # the first pass fits whole (one tile of the whole grid), the second is tiled
    assert tiled.shape == ref.shape and F.cosine_similarity(tiled, ref, dim=1).mean() >= 0.995


def test_bounded_upsampling_into_a_sink_equals_the_whole_resize(shipped, photo_inputs):
    _, image, features, _ = photo_inputs
    h, w = features.shape[-2:]
    size = (8 * h + 5, 8 * w + 3)
    bands = {}
    with torch.inference_mode():
        whole = upsample_bounded(shipped.upsampler, image, features, size, learned_passes=1)
        upsample_bounded(shipped.upsampler, image, features, size, learned_passes=1,
                         max_memory=tiling.RESERVED_BYTES + pass_bytes((h, w), 384),
                         sink=lambda r0, band: bands.__setitem__(r0, band.clone()))
    assert len(bands) > 1
    streamed = torch.cat([bands[k] for k in sorted(bands)], dim=-2)
    with torch.inference_mode():   # float64 oracle of the bilinear growth after one learned pass
        learned = shipped.upsampler.upsample_features(features, shipped.upsampler.image_branch.quarter_map(image), 14.0)
    expected = F.interpolate(learned.double(), size=size, mode="bilinear", align_corners=False).float()
    scale = float(learned.abs().max())
    torch.testing.assert_close(streamed, expected, rtol=0, atol=4e-6 * scale)
    torch.testing.assert_close(whole, expected, rtol=0, atol=4e-6 * scale)  # torch's own float32 kernel
