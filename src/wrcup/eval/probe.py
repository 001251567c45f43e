"""Linear probes on cached feature maps: semantic segmentation and monocular depth.

Both probes are a single 1×1 convolution on the (possibly upsampled) features; its output is upsampled
bilinearly to the label resolution before the loss, so the probe measures how much per-pixel information the
features hold. Training follows the WRC paper's segmentation protocol: AdamW, lr 5e-4, cosine schedule stepped
per batch, batch 4, 20 epochs. The features are cached tensors, never a backbone.

Segmentation: cross-entropy with an ignore index (255 by default).

Depth: scale-invariant log loss of Eigen et al. (2014),
``L_si = mean(d²) - λ mean(d)²`` with ``d = log pred - log target`` over the valid pixels of each image,
averaged over images. Eigen et al. use ``λ = 0.5``; ``λ = 0.85`` (the default here) is the weight made common
by later monocular-depth work (BTS, AdaBins); ``λ = 1`` is fully scale-invariant. Added to it, with weight
``gradient_weight``, the gradient-matching loss of Li & Snavely (MegaDepth, 2018) on the *spatial* gradients of
``d``: ``mean(|∂x d| + |∂y d|)`` over pairs of neighbouring valid pixels. (The WRC authors' probe takes these
differences along the batch and channel axes, a bug not reproduced here.) The output is made positive with
``exp`` (the 1×1 conv then predicts log-depth; default) or ``softplus``.

Determinism: with ``seed`` fixed, initialisation and shuffling are fixed, so CPU runs repeat exactly; on GPU,
bilinear upsampling's backward uses atomic adds and may differ in the last bits.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from .._checks import check_choice, check_positive_int, check_tensor

__all__ = [
    "LinearProbe",
    "DepthProbe",
    "train_linear_probe",
    "predict_segmentation",
    "train_depth_probe",
    "predict_depth",
    "silog_loss",
    "gradient_matching_loss",
]


class LinearProbe(nn.Module):
    """1×1 convolution from ``in_channels`` feature channels to ``num_classes`` logits on the feature grid."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``B×C×h×w`` features → ``B×K×h×w`` logits."""
        return self.conv(features)


class DepthProbe(nn.Module):
    """1×1 convolution to one channel; :meth:`log_depth` gives log-depth at any output size.

    ``activation="exp"`` reads the conv output as log-depth; ``"softplus"`` makes depth ``softplus(output)``.
    """

    def __init__(self, in_channels: int, activation: str = "exp"):
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        self.activation = check_choice(activation, "activation", ("exp", "softplus"))
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)

    def log_depth(self, features: torch.Tensor, out_size) -> torch.Tensor:
        """``B×C×h×w`` features → ``B×H×W`` log-depth, the raw output upsampled bilinearly before the activation."""
        raw = F.interpolate(self.conv(features), size=tuple(out_size), mode="bilinear", align_corners=False)[:, 0]
        if self.activation == "exp":
            return raw
        # log(softplus(x)) without underflow to log(0) for very negative x
        return torch.where(raw > -20, F.softplus(raw).clamp_min(1e-30).log(), raw)

    def forward(self, features: torch.Tensor, out_size=None) -> torch.Tensor:
        """``B×C×h×w`` features → positive ``B×H×W`` depth (at the feature grid when ``out_size`` is None)."""
        return self.log_depth(features, features.shape[-2:] if out_size is None else out_size).exp()


# ------------------------------------------------------------------------------------------------- losses
def silog_loss(log_pred: torch.Tensor, log_target: torch.Tensor, valid: torch.Tensor,
               variance_weight: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al., 2014), per image then averaged over images with valid pixels.

    Args:
        log_pred, log_target: ``B×H×W`` log-depths.
        valid: bool ``B×H×W`` mask of pixels with a target.
        variance_weight: λ in ``mean(d²) - λ mean(d)²``.
    """
    d = torch.where(valid, log_pred - log_target, torch.zeros_like(log_pred))
    count = valid.flatten(1).sum(dim=1)
    has = count > 0
    n = count.clamp_min(1).to(d.dtype)
    mean_sq = d.pow(2).flatten(1).sum(dim=1) / n
    mean = d.flatten(1).sum(dim=1) / n
    per_image = mean_sq - variance_weight * mean.pow(2)
    return per_image[has].mean() if bool(has.any()) else d.sum() * 0


def gradient_matching_loss(log_diff: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 of the spatial gradients of the log-depth difference (Li & Snavely, 2018; one scale).

    Args:
        log_diff: ``B×H×W`` (or ``B×1×H×W``) ``log pred - log target``.
        valid: bool mask of the same shape.
    Returns:
        ``(Σ|∂x d| + Σ|∂y d|) / (number of valid pixels)``, differences taken along the last two (spatial) axes
        and counted only where both pixels are valid.
    """
    d = torch.where(valid, log_diff, torch.zeros_like(log_diff))
    dx = (d[..., :, 1:] - d[..., :, :-1]).abs() * (valid[..., :, 1:] & valid[..., :, :-1])
    dy = (d[..., 1:, :] - d[..., :-1, :]).abs() * (valid[..., 1:, :] & valid[..., :-1, :])
    return (dx.sum() + dy.sum()) / valid.sum().clamp_min(1)


# ------------------------------------------------------------------------------------------------ training
def _as_dataset(features, targets, name: str) -> Dataset:
    if isinstance(features, torch.Tensor):
        check_tensor(features, "train_features", 4)
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"{name} must be a tensor when train_features is a tensor, got {type(targets).__name__}")
        if targets.ndim != 3 or targets.shape[0] != features.shape[0]:
            raise ValueError(f"{name} must be N×H×W with N = {features.shape[0]}, got shape {tuple(targets.shape)}")
        return TensorDataset(features, targets)
    if targets is not None:
        raise ValueError(f"{name} must be None when train_features is a dataset yielding (features, {name})")
    if not (hasattr(features, "__getitem__") and hasattr(features, "__len__")):
        raise TypeError("train_features must be an N×C×h×w tensor or a map-style dataset of (features, targets)")
    return features


def _make_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _fit(probe: nn.Module, dataset: Dataset, loss_fn: Callable, *, epochs, lr, batch_size, weight_decay,
         generator, device, progress, desc) -> list[float]:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    steps = epochs * len(loader)
    if steps == 0:
        raise ValueError("train_features is empty")
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    probe.train()
    with tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            total, batches = 0.0, 0
            for feats, targets in loader:
                feats = feats.to(device=device, dtype=torch.float32, non_blocking=True)
                targets = targets.to(device=device, non_blocking=True)
                loss = loss_fn(probe, feats, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach())
                batches += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            history.append(total / batches)
    probe.eval()
    return history


def _check_training_settings(epochs, lr, batch_size, weight_decay):
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")


def _resolve_device(device, dataset):
    if device is not None:
        return torch.device(device)
    sample = dataset[0][0]
    return sample.device if isinstance(sample, torch.Tensor) else torch.device("cpu")


def _seeded_init(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    # initialise from the seed without disturbing the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def train_linear_probe(train_features, labels: torch.Tensor | None = None, *, num_classes: int, epochs: int = 20,
                       lr: float = 5e-4, batch_size: int = 4, weight_decay: float = 1e-2, seed: int = 0,
                       ignore_index: int = 255, device=None, progress: bool = True,
                       return_history: bool = False):
    """Train a 1×1-conv segmentation probe.

    Args:
        train_features: ``N×C×h×w`` float tensor, or a map-style dataset whose items are
            ``(C×h×w features, H×W int64 labels)`` (items of one batch must share shapes).
        labels: ``N×H×W`` int64 class ids with ``ignore_index`` for unlabelled pixels (None for a dataset).
        num_classes: number of classes K.
        epochs, lr, batch_size: WRC paper protocol: 20, 5e-4, 4.
        weight_decay: AdamW weight decay (PyTorch's default 1e-2; the paper does not state it).
        seed: fixes the initialisation and the shuffling.
        device: where to train (default: the device of the features).
        progress: tqdm bar over the training steps.
        return_history: also return the mean training loss of every epoch.
    Returns:
        the trained :class:`LinearProbe` in eval mode (and the loss history when asked). Logits are upsampled
        bilinearly to the label resolution before the cross-entropy; the cosine schedule is stepped per batch.
    """
    check_positive_int(num_classes, "num_classes", minimum=2)
    _check_training_settings(epochs, lr, batch_size, weight_decay)
    dataset = _as_dataset(train_features, labels, "labels")
    generator = _make_generator(seed)
    device = _resolve_device(device, dataset)
    channels = dataset[0][0].shape[0]
    probe = _seeded_init(lambda: LinearProbe(channels, num_classes), seed).to(device)

    def loss_fn(model, feats, targets):
        if targets.dtype != torch.int64:
            raise TypeError(f"labels must be int64 class ids, got {targets.dtype}")
        logits = F.interpolate(model(feats), size=targets.shape[-2:], mode="bilinear", align_corners=False)
        valid = targets != ignore_index
        if bool((targets[valid] >= num_classes).any()) or bool((targets[valid] < 0).any()):
            raise ValueError(f"labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
        # sum / count instead of the mean so a batch without labelled pixels gives 0, not NaN
        loss = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
        return loss / valid.sum().clamp_min(1)

    history = _fit(probe, dataset, loss_fn, epochs=epochs, lr=lr, batch_size=batch_size,
                   weight_decay=weight_decay, generator=generator, device=device, progress=progress,
                   desc="linear probe")
    return (probe, history) if return_history else probe


def _batched(features: torch.Tensor, name: str):
    check_tensor(features, name, (3, 4))
    return (features[None], True) if features.ndim == 3 else (features, False)


def _check_out_size(out_size) -> tuple[int, int]:
    if not isinstance(out_size, (tuple, list, torch.Size)) or len(out_size) != 2:
        raise TypeError(f"out_size must be a (height, width) pair of ints, got {out_size!r}")
    for v in out_size:
        check_positive_int(v, "out_size")
    return int(out_size[0]), int(out_size[1])


def _predict_in_chunks(probe: nn.Module, predict, features: torch.Tensor, out_size, batch_size: int) -> torch.Tensor:
    """``predict(chunk, (H, W))`` over ``batch_size`` chunks of C×h×w or B×C×h×w ``features`` (moved to the probe's
    device and dtype), the probe in eval mode; the results concatenated (without the batch axis for C×h×w)."""
    features, single = _batched(features, "features")
    out_size = _check_out_size(out_size)
    param = next(probe.parameters())
    probe.eval()
    pred = torch.cat([predict(chunk.to(device=param.device, dtype=param.dtype), out_size)
                      for chunk in features.split(batch_size)])
    return pred[0] if single else pred


@torch.no_grad()
def predict_segmentation(probe: LinearProbe, features: torch.Tensor, out_size, batch_size: int = 8) -> torch.Tensor:
    """Class map: argmax of the probe's logits upsampled bilinearly to ``out_size``.

    Args:
        features: ``C×h×w`` or ``B×C×h×w``.
    Returns:
        int64 ``H×W`` or ``B×H×W``.
    """
    def classes(chunk: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(probe(chunk), size=size, mode="bilinear", align_corners=False).argmax(dim=1)

    return _predict_in_chunks(probe, classes, features, out_size, batch_size)


def train_depth_probe(train_features, depths: torch.Tensor | None = None, *, epochs: int = 20, lr: float = 5e-4,
                      batch_size: int = 4, weight_decay: float = 1e-2, seed: int = 0,
                      variance_weight: float = 0.85, gradient_weight: float = 0.5, activation: str = "exp",
                      device=None, progress: bool = True, return_history: bool = False):
    """Train a 1×1-conv depth probe with the scale-invariant log loss plus spatial gradient matching.

    Args:
        train_features: ``N×C×h×w`` float tensor, or a map-style dataset of ``(C×h×w features, H×W depth)``.
        depths: ``N×H×W`` float depth (or pseudo-depth); pixels that are not finite and positive are ignored.
        variance_weight: λ of the scale-invariant loss (0.85; Eigen et al. used 0.5).
        gradient_weight: weight of the gradient-matching loss (0.5 as in MegaDepth; 0 disables it).
        activation: ``"exp"`` (the conv predicts log-depth) or ``"softplus"``.
        Other arguments as in :func:`train_linear_probe`.
    Returns:
        the trained :class:`DepthProbe` in eval mode (and the per-epoch loss history when asked).
    """
    _check_training_settings(epochs, lr, batch_size, weight_decay)
    for value, name in ((variance_weight, "variance_weight"), (gradient_weight, "gradient_weight")):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    check_choice(activation, "activation", ("exp", "softplus"))
    dataset = _as_dataset(train_features, depths, "depths")
    generator = _make_generator(seed)
    device = _resolve_device(device, dataset)
    channels = dataset[0][0].shape[0]
    probe = _seeded_init(lambda: DepthProbe(channels, activation), seed).to(device)

    def loss_fn(model, feats, targets):
        if not targets.is_floating_point():
            raise TypeError(f"depths must be a floating tensor, got {targets.dtype}")
        targets = targets.float()
        valid = torch.isfinite(targets) & (targets > 0)
        log_target = torch.where(valid, targets, torch.ones_like(targets)).log()
        log_pred = model.log_depth(feats, targets.shape[-2:])
        loss = silog_loss(log_pred, log_target, valid, variance_weight)
        if gradient_weight > 0:
            loss = loss + gradient_weight * gradient_matching_loss(log_pred - log_target, valid)
        return loss

    history = _fit(probe, dataset, loss_fn, epochs=epochs, lr=lr, batch_size=batch_size,
                   weight_decay=weight_decay, generator=generator, device=device, progress=progress,
                   desc="depth probe")
    return (probe, history) if return_history else probe


@torch.no_grad()
def predict_depth(probe: DepthProbe, features: torch.Tensor, out_size, batch_size: int = 8) -> torch.Tensor:
    """Positive depth at ``out_size`` (raw output upsampled bilinearly, then the activation).

    Args:
        features: ``C×h×w`` or ``B×C×h×w``.
    Returns:
        float ``H×W`` or ``B×H×W``.
    """
    return _predict_in_chunks(probe, probe, features, out_size, batch_size)
