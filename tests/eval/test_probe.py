"""Linear segmentation and depth probes on synthetic cached features; depth losses by hand."""
import math

import pytest
import torch
from torch.utils.data import Dataset

from wrcup.eval.probe import (DepthProbe, LinearProbe, gradient_matching_loss, predict_depth, predict_segmentation,
                              silog_loss, train_depth_probe, train_linear_probe)




def separable_problem(n=6, channels=5, k=3, grid=8, scale=2, seed=0):
    """Blocky class maps; each class has its own feature direction. Labels at `scale`× the feature grid."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, k, (n, grid // 2, grid // 2), generator=g)
    cells = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2)                  # n × grid × grid
    directions = torch.randn(k, channels, generator=g)
    feats = directions[cells].permute(0, 3, 1, 2) + 0.1 * torch.randn(n, channels, grid, grid, generator=g)
    labels = cells.repeat_interleave(scale, 1).repeat_interleave(scale, 2).clone()
    labels[:, :2, :] = 255  # an unlabelled band
    return feats, labels


def test_separable_problem_is_learned():
    feats, labels = separable_problem()
    probe, history = train_linear_probe(feats, labels, num_classes=3, epochs=40, lr=5e-2, batch_size=2,
                                        progress=False, return_history=True)
    assert isinstance(probe, LinearProbe) and not probe.training
    pred = predict_segmentation(probe, feats, labels.shape[-2:])
    valid = labels != 255
    accuracy = (pred[valid] == labels[valid]).float().mean().item()
    assert accuracy > 0.99
    assert history[-1] < 0.25 * history[0]
    assert len(history) == 40


def test_deterministic_with_seed_and_leaves_global_rng_alone():
    feats, labels = separable_problem(seed=1)
    state = torch.get_rng_state()
    a = train_linear_probe(feats, labels, num_classes=3, epochs=2, seed=7, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_linear_probe(feats, labels, num_classes=3, epochs=2, seed=7, progress=False)
    c = train_linear_probe(feats, labels, num_classes=3, epochs=2, seed=8, progress=False)
    assert torch.equal(a.conv.weight, b.conv.weight) and torch.equal(a.conv.bias, b.conv.bias)
    assert not torch.equal(a.conv.weight, c.conv.weight)


class PairDataset(Dataset):
    def __init__(self, feats, targets):
        self.feats, self.targets = feats, targets

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, i):
        return self.feats[i], self.targets[i]


def test_dataset_input_equals_tensor_input():
    feats, labels = separable_problem(seed=2)
    a = train_linear_probe(feats, labels, num_classes=3, epochs=2, seed=3, progress=False)
    b = train_linear_probe(PairDataset(feats, labels), num_classes=3, epochs=2, seed=3, progress=False)
    assert torch.equal(a.conv.weight, b.conv.weight)


def test_cosine_schedule_steps_per_batch():
    # lr at step t of T: lr0 * (1 + cos(pi t / T)) / 2; after training the last step has set it to ~0
    feats, labels = separable_problem(n=4, seed=3)
    seen = []
    import torch.optim as optim

    original = optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    optim.AdamW.step = spy
    try:
        train_linear_probe(feats, labels, num_classes=3, epochs=3, batch_size=2, lr=1e-3, progress=False)
    finally:
        optim.AdamW.step = original
    steps = 3 * 2
    want = [1e-3 * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert seen == pytest.approx(want, rel=1e-9)


def test_predict_segmentation_shapes():
    probe = LinearProbe(4, 3)
    single = predict_segmentation(probe, torch.randn(4, 5, 6), (10, 12))
    batch = predict_segmentation(probe, torch.randn(2, 4, 5, 6), (10, 12))
    assert single.shape == (10, 12) and single.dtype == torch.int64
    assert batch.shape == (2, 10, 12)


def test_bad_labels_are_rejected():
    feats, labels = separable_problem(seed=4)
    with pytest.raises(ValueError, match="labels must lie"):
        train_linear_probe(feats, labels, num_classes=2, epochs=1, progress=False)
    with pytest.raises(TypeError, match="int64"):
        train_linear_probe(feats, labels.int(), num_classes=3, epochs=1, progress=False)
    with pytest.raises(ValueError, match="labels"):
        train_linear_probe(feats, labels[:3], num_classes=3, epochs=1, progress=False)


# ---------------------------------------------------------------------------------------------- depth
def test_gradient_loss_uses_spatial_axes_hand_case():
    d = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # 1×2×2
    valid = torch.ones_like(d, dtype=torch.bool)
    # |1-0| + |3-2| along x, |2-0| + |3-1| along y, over 4 valid pixels
    assert gradient_matching_loss(d, valid).item() == pytest.approx(6 / 4)
    # constant within each image but different across the batch and channels: no spatial gradient
    flat = torch.tensor([1.0, 5.0, -2.0])[:, None, None, None].expand(3, 2, 4, 4)
    assert gradient_matching_loss(flat, torch.ones_like(flat, dtype=torch.bool)).item() == 0.0
    # an invalid pixel removes the pairs it belongs to: only |1-0| along x and |2-0| along y remain
    valid = torch.tensor([[[True, True], [True, False]]])
    assert gradient_matching_loss(d, valid).item() == pytest.approx(3 / 3)


def test_silog_hand_cases():
    target = torch.tensor([[[1.0, 2.0], [4.0, 8.0]]]).log()
    valid = torch.ones_like(target, dtype=torch.bool)
    shifted = target + math.log(3.0)  # depth scaled by 3
    assert silog_loss(shifted, target, valid, variance_weight=1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert silog_loss(shifted, target, valid, 0.85).item() == pytest.approx(0.15 * math.log(3.0) ** 2)
    # per image: d = (0, 0, 0, 2) on one image, all-invalid second image is skipped
    pred = torch.stack([target[0] + torch.tensor([[0.0, 0.0], [0.0, 2.0]]), target[0]])
    valid2 = torch.stack([valid[0], torch.zeros_like(valid[0])])
    want = 4 / 4 - 0.5 * (2 / 4) ** 2
    assert silog_loss(pred, torch.cat([target, target]), valid2, 0.5).item() == pytest.approx(want)


def depth_problem(n=6, channels=4, grid=8, scale=2, seed=0, activation="exp"):
    """Depth that the probe can represent exactly: activation(bilinear(linear map of the features))."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, channels, grid, grid, generator=g)
    w = torch.randn(channels, generator=g) * 0.5
    raw = torch.einsum("nchw,c->nhw", feats, w) + 1.0
    raw = torch.nn.functional.interpolate(raw[:, None], scale_factor=scale, mode="bilinear",
                                          align_corners=False)[:, 0]
    depth = raw.exp() if activation == "exp" else torch.nn.functional.softplus(raw)
    depth[:, 0, :3] = 0.0             # missing depth
    depth[:, 1, 0] = float("nan")
    return feats, depth


@pytest.mark.parametrize("activation", ["exp", "softplus"])
def test_depth_probe_learns_log_linear_depth(activation):
    feats, depth = depth_problem(activation=activation)
    probe, history = train_depth_probe(feats, depth, epochs=60, lr=5e-2, batch_size=3, activation=activation,
                                       progress=False, return_history=True)
    assert isinstance(probe, DepthProbe)
    assert history[-1] < 0.1 * history[0]
    pred = predict_depth(probe, feats, depth.shape[-2:])
    assert pred.shape == depth.shape and bool((pred > 0).all())
    valid = torch.isfinite(depth) & (depth > 0)
    log_err = (pred[valid].log() - depth[valid].log()).abs().mean().item()
    assert log_err < 0.02


def test_depth_probe_is_deterministic():
    feats, depth = depth_problem(seed=1)
    a = train_depth_probe(feats, depth, epochs=2, seed=5, progress=False)
    b = train_depth_probe(feats, depth, epochs=2, seed=5, progress=False)
    assert torch.equal(a.conv.weight, b.conv.weight)
    with pytest.raises(TypeError, match="depths"):
        train_depth_probe(feats, depth.long(), epochs=1, progress=False)
