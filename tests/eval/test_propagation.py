"""Label propagation (DINO's DAVIS protocol) against a dense float64 transcription and synthetic videos."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wrcup.eval.propagation import downsample_labels, propagate_frame, propagate_labels

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-dev"




# ---------------------------------------------------------------- oracle: DINO's algorithm, written densely
def dense_window_mask(h, w, radius):
    """hw × hw mask by explicit loops (target cell, source cell), like DINO's restrict_neighborhood."""
    mask = torch.zeros(h, w, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for p in range(h):
                for q in range(w):
                    if radius is None or (abs(i - p) <= radius and abs(j - q) <= radius):
                        mask[i, j, p, q] = 1
    return mask.reshape(h * w, h * w)


def oracle_frame(target, ctx_feats, ctx_labels, topk, temperature, radius):
    """Soft labels K×h×w: exp(cos/T) masked, k-th-value threshold over all context cells, normalised."""
    c, h, w = target.shape
    t = F.normalize(target.double().reshape(c, -1), dim=0)                      # C × hw
    s = F.normalize(ctx_feats.double().reshape(len(ctx_feats), c, -1), dim=1)   # T × C × hw
    mask = dense_window_mask(h, w, radius)
    aff = torch.stack([torch.exp(t.T @ s_i / temperature) * mask for s_i in s])  # T × hw(tgt) × hw(src)
    aff = aff.permute(1, 0, 2).reshape(h * w, -1)                                 # tgt × (T*src)
    kth = torch.sort(aff, dim=1, descending=True).values[:, topk - 1:topk]
    aff = torch.where(aff >= kth, aff, torch.zeros_like(aff))
    aff = aff / aff.sum(dim=1, keepdim=True)
    lab = ctx_labels.double().reshape(len(ctx_labels), ctx_labels.shape[1], -1)  # T × K × hw
    lab = lab.permute(0, 2, 1).reshape(-1, lab.shape[1])
    return (aff @ lab).T.reshape(-1, h, w)


def oracle_video(frames, first_labels, frame_size, n_last, topk, temperature, radius):
    c, h, w = frames[0].shape
    ids = torch.unique(first_labels)
    first_soft = downsample_labels(first_labels, (h, w), ids).double()
    queue, out = [], [first_labels]
    for f in frames[1:]:
        ctx_f = torch.stack([frames[0]] + [q[0] for q in queue])
        ctx_l = torch.stack([first_soft] + [q[1] for q in queue])
        soft = oracle_frame(f, ctx_f, ctx_l, topk, temperature, radius)
        queue = (queue + [(f, soft)])[-n_last:]
        up = F.interpolate(soft[None], size=frame_size, mode="bilinear", align_corners=False)[0]
        for k in range(len(up)):  # DINO's norm_mask
            if up[k].max() > 0:
                up[k] = (up[k] - up[k].min()) / (up[k] - up[k].min()).max()
        out.append(ids[up.argmax(0)])
    return out


# ---------------------------------------------------------------- tests
def test_frame_matches_dense_oracle_with_chunking():
    g = torch.Generator().manual_seed(0)
    c, h, w, n_ctx, k = 6, 7, 9, 3, 4
    target = F.normalize(torch.randn(c, h, w, generator=g), dim=0)
    ctx = F.normalize(torch.randn(n_ctx, c, h, w, generator=g), dim=1)
    labels = torch.softmax(torch.randn(n_ctx, k, h, w, generator=g), dim=1)
    for radius in (None, 0, 2, 12):
        want = oracle_frame(target, ctx, labels, topk=5, temperature=0.1, radius=radius)
        # a tiny block budget forces one target row per chunk
        got = propagate_frame(target, ctx, labels, topk=5, temperature=0.1, radius=radius, max_block_elements=1)
        whole = propagate_frame(target, ctx, labels, topk=5, temperature=0.1, radius=radius)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(whole, got, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got.sum(0), torch.ones(h, w), rtol=1e-5, atol=1e-5)


def test_ties_at_the_kth_value_are_all_kept_like_dino():
    # one-hot features make every cosine exactly 0 or 1 (in float32 as in float64), and a duplicated context
    # frame doubles every value: many rows tie at the k-th value, and DINO's threshold keeps all tied cells
    g = torch.Generator().manual_seed(5)
    c, h, w = 4, 6, 7

    def one_hot_map():
        return F.one_hot(torch.randint(0, c, (h, w), generator=g), c).permute(2, 0, 1).float()

    frame = one_hot_map()
    target, ctx = one_hot_map(), torch.stack([frame, frame, one_hot_map()])
    labels = torch.softmax(torch.randn(3, 3, h, w, generator=g), dim=1)
    for topk, radius in ((5, None), (3, 1), (1, 2), (40, 1)):
        want = oracle_frame(target, ctx, labels, topk=topk, temperature=0.1, radius=radius)
        got = propagate_frame(target, ctx, labels, topk=topk, temperature=0.1, radius=radius)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_small_temperature_does_not_overflow():
    g = torch.Generator().manual_seed(1)
    target = F.normalize(torch.randn(4, 5, 5, generator=g), dim=0)
    ctx = F.normalize(torch.randn(2, 4, 5, 5, generator=g), dim=1)
    labels = torch.softmax(torch.randn(2, 3, 5, 5, generator=g), dim=1)
    got = propagate_frame(target, ctx, labels, temperature=1e-3, radius=None)
    assert torch.isfinite(got).all()
    want = oracle_frame(target, ctx, labels, topk=5, temperature=1e-2, radius=None)  # float64 copes with 1e-2
    got2 = propagate_frame(target, ctx, labels, temperature=1e-2, radius=None)
    torch.testing.assert_close(got2.double(), want, rtol=1e-4, atol=1e-5)


def test_video_matches_dense_oracle():
    g = torch.Generator().manual_seed(2)
    c, h, w, n = 8, 6, 8, 6
    frames = [torch.randn(c, h, w, generator=g) for _ in range(n)]
    first = torch.randint(0, 3, (24, 32), generator=g)
    got = list(propagate_labels(frames, first, (24, 32), n_last=2, topk=3, radius=2, progress=False))
    want = oracle_video(frames, first, (24, 32), n_last=2, topk=3, temperature=0.1, radius=2)
    assert len(got) == n
    for a, b in zip(got, want):
        assert a.dtype == torch.int64 and a.shape == (24, 32)
        assert torch.equal(a, b)


def _square_video(n_frames, h, w, size, path, noise, seed):
    """Feature maps with a square of feature `a` on background `b`, moving along `path` (cells per frame)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    frames, masks = [], []
    for t in range(n_frames):
        y, x = path(t)
        m = torch.zeros(h, w, dtype=torch.bool)
        m[y:y + size, x:x + size] = True
        f = torch.where(m[None], a[:, None, None], b[:, None, None]) + noise * torch.randn(3, h, w, generator=g)
        frames.append(f)
        masks.append(m)
    return frames, masks


def test_translating_square_is_tracked_exactly():
    h, w, size, scale = 12, 16, 4, 4
    frames, masks = _square_video(10, h, w, size, lambda t: (2 + t // 2, 1 + t), noise=0.05, seed=3)
    first = masks[0].repeat_interleave(scale, 0).repeat_interleave(scale, 1).long() * 255  # DAVIS 2016 ids
    preds = list(propagate_labels(frames, first, (h * scale, w * scale), progress=False))
    assert torch.equal(preds[0], first)  # the annotated frame is returned as given
    for pred, m in zip(preds[1:], masks[1:]):
        # perfect soft labels, upsampled bilinearly: the square's four corner pixels round off to background
        up = F.interpolate(m[None, None].float(), scale_factor=scale, mode="bilinear", align_corners=False)[0, 0]
        want = (up > 0.5).long() * 255
        assert (want != m.repeat_interleave(scale, 0).repeat_interleave(scale, 1).long() * 255).sum() == 4
        assert torch.equal(pred, want)


def test_one_hot_features_give_perfect_propagation():
    # features = one-hot of the true label: every object is found wherever it moves inside the window
    h, w, k = 10, 10, 4
    lab = torch.zeros(8, h, w, dtype=torch.long)
    for t in range(8):
        lab[t, 1:4, t // 2:t // 2 + 3] = 1
        lab[t, 6:9, 6 - t // 3:9 - t // 3] = 2
        lab[t, 5, 0:2 + t // 4] = 3
    frames = [F.one_hot(lab[t], k).permute(2, 0, 1).float() for t in range(8)]
    preds = list(propagate_labels(frames, lab[0], (h, w), progress=False))
    for t, p in enumerate(preds):
        assert torch.equal(p, lab[t])


def test_neighbourhood_restricts_how_far_labels_jump():
    # the object sits at the left in the first frame; in the next frame only a far-right patch looks like it
    h, w = 6, 20
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    m0 = torch.zeros(h, w, dtype=torch.bool)
    m0[2:4, 0:2] = True
    m1 = torch.zeros(h, w, dtype=torch.bool)
    m1[2:4, 17:19] = True
    frames = [torch.where(m[None], a[:, None, None], b[:, None, None]) for m in (m0, m1)]
    first = m0.long()
    near = list(propagate_labels(frames, first, (h, w), radius=3, progress=False))[1]
    far = list(propagate_labels(frames, first, (h, w), radius=None, progress=False))[1]
    assert near.sum() == 0            # object cells out of reach: only background neighbours
    assert torch.equal(far, m1.long())  # unrestricted: the object is found across the frame


def test_deterministic_and_streaming():
    g = torch.Generator().manual_seed(4)
    frames = [torch.randn(5, 8, 8, generator=g) for _ in range(5)]
    first = torch.randint(0, 2, (16, 16), generator=g)
    run1 = list(propagate_labels(frames, first, (16, 16), radius=3, progress=False))
    run2 = list(propagate_labels(iter(frames), first, (16, 16), radius=3, progress=False))
    assert all(torch.equal(x, y) for x, y in zip(run1, run2, strict=True))
    # lazily consumed: the generator does not read past the frame being predicted
    seen = []

    def lazy():
        for f in frames:
            seen.append(1)
            yield f

    stream = propagate_labels(lazy(), first, (16, 16), progress=False)
    next(stream), next(stream)
    assert len(seen) == 2


def test_downsample_labels_nearest_and_area():
    lab = torch.tensor([[0, 0, 7, 7], [0, 0, 7, 7], [3, 3, 3, 7], [3, 3, 3, 3]])
    ids = torch.tensor([0, 3, 7])
    near = downsample_labels(lab, (2, 2), ids)
    # nearest picks the pixel under each cell centre: rows/cols floor((i + 0.5) * 2) = 1 and 3, like PIL
    assert torch.equal(near.argmax(0), torch.tensor([[0, 2], [1, 1]]))
    area = downsample_labels(lab, (2, 2), ids, mode="area")
    torch.testing.assert_close(area[:, 1, 1], torch.tensor([0.0, 0.75, 0.25]))
    torch.testing.assert_close(area.sum(0), torch.ones(2, 2))


def test_bad_input_is_rejected():
    f = [torch.randn(3, 4, 4)]
    with pytest.raises(TypeError, match="first_labels"):
        propagate_labels(f, torch.zeros(4, 4), (4, 4))
    with pytest.raises(ValueError, match="temperature"):
        propagate_labels(f, torch.zeros(4, 4, dtype=torch.long), (4, 4), temperature=0)
    with pytest.raises(TypeError, match="frame_size"):
        propagate_labels(f, torch.zeros(4, 4, dtype=torch.long), 4)
    frames = [torch.randn(3, 4, 4), torch.randn(3, 5, 4)]
    with pytest.raises(ValueError, match=r"frame_features\[1\]"):
        list(propagate_labels(frames, torch.zeros(4, 4, dtype=torch.long), (4, 4), progress=False))


@pytest.mark.skipif(not DAVIS.is_dir(), reason="shared DAVIS 2016 sample not present")
def test_real_davis_mask_propagates_with_label_features():
    """Real object motion (blackswan): features = noisy one-hot of the true mask on a 1/8 grid."""
    from PIL import Image

    files = sorted((DAVIS / "Annotations" / "480p" / "blackswan").glob("*.png"))[:8]
    masks = [torch.from_numpy(np.array(Image.open(p))).long() for p in files]
    g = torch.Generator().manual_seed(5)
    grid = (60, 107)
    frames = [downsample_labels(m, grid, torch.tensor([0, 255]), mode="area") + 0.1 * torch.randn(2, *grid, generator=g)
              for m in masks]
    preds = list(propagate_labels(frames, masks[0], masks[0].shape, progress=False))
    for p, m in zip(preds[1:], masks[1:]):
        inter = ((p == 255) & (m == 255)).sum().item()
        union = ((p == 255) | (m == 255)).sum().item()
        assert inter / union > 0.9


def test_tile_side_does_not_change_the_soft_labels():
    """The tiling only regroups the same dot products: tiles of side 8 (the former default), 12 and 16 and the
    sides local_tile_side picks give the same soft labels, at a 4× method's radius (48 cells) and at 12."""
    from wrcup.eval import propagation

    g = torch.Generator().manual_seed(3)
    c, h, w, n_ctx = 16, 40, 70, 8
    target = F.normalize(torch.randn(c, h, w, generator=g), dim=0)
    ctx = F.normalize(torch.randn(n_ctx, c, h, w, generator=g), dim=1)
    labels = torch.softmax(torch.randn(n_ctx, 3, h, w, generator=g), dim=1)
    assert [propagation.local_tile_side(r) for r in (0, 12, 24, 47, 48, 96)] == [12, 12, 12, 15, 16, 16]
    for radius in (12, 48):
        outs = []
        for side in (8, 12, 16, None):
            shape = propagation._tile_size(h, w, n_ctx, radius, 2 ** 25, local_tile=side)
            assert shape == (min(h, side or propagation.local_tile_side(radius)),) * 2
            plan = propagation._neighbourhood_plan(h, w, radius, shape, target.device)
            outs.append(propagate_frame(target, ctx, labels, topk=5, temperature=0.1, radius=radius, plan=plan))
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0], rtol=0, atol=1e-6)
        assert propagate_frame(target, ctx, labels, radius=radius).equal(outs[-1])  # the default plan
