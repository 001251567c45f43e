"""Input conversion shared by the metrics: arrays and tensors in, checked, on the CPU."""
from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an array or tensor: {err}") from None
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _as_array(x, name: str) -> np.ndarray:
    """numpy view of an array or CPU tensor (the mask metrics run in numpy: single-threaded, no OpenMP waits)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _as_masks(pred, gt, void=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p = _as_array(pred, "pred")
    g = _as_array(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    if p.ndim < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {tuple(p.shape)}")
    v = None
    if void is not None:
        v = _as_array(void, "void")
        if v.shape != g.shape:
            raise ValueError(f"void must have the masks' shape {tuple(g.shape)}, got {tuple(v.shape)}")
        v = v != 0
    return p != 0, g != 0, v


def _scalar_or_tensor(values: np.ndarray) -> float | torch.Tensor:
    return float(values) if values.ndim == 0 else torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
