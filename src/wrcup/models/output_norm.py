"""The length of an upsampler pass's output vectors: the network's own, or that of the bilinear upsampling.

The training recipe's criterion is dominated by its cosine term (:func:`wrcup.train.losses.cosine_minmax_loss`),
so a trained network gets directions right before lengths: measured on DAVIS dev frames and held-out photos, the
shipped network's output vectors are 13–19 % longer than the backbone's own features at the higher resolution,
the bilinear upsampling's within 4 % of them (``norm_ratio`` of :func:`wrcup.eval.fidelity.feature_fidelity`;
docs/RESULTS.md, "Output norm"). With ``output_norm="bilinear"`` a pass
keeps the network's direction at every output pixel and takes its length from the bilinear 2× upsampling of the
pass's input: the cosine to any target is unchanged, the squared error is not.
"""
from __future__ import annotations

import copy

import torch

from .._checks import check_choice

__all__ = ["OUTPUT_NORMS", "check_output_norm", "match_norm", "with_output_norm"]

#: "learned": the network's output as it is; "bilinear": rescaled per pixel to the bilinear upsampling's norm.
OUTPUT_NORMS = ("learned", "bilinear")

# Below this channel norm a pixel counts as zero and stays zero (no division by ~0).
_EPS = 1e-6


def check_output_norm(value: str, name: str = "output_norm") -> str:
    return check_choice(value, name, OUTPUT_NORMS)


def match_norm(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``features`` rescaled at every pixel to the channel norm of ``reference``.

    Args:
        features: B×C×H×W (any floating dtype).
        reference: B×C×H×W, same shape.
    Returns:
        B×C×H×W in the dtype of ``features``: ``features[:, :, i, j] · ‖reference[:, :, i, j]‖ /
        ‖features[:, :, i, j]‖`` (a pixel whose features have norm below 1e-6 stays as it is). Differentiable;
        shapes are checked, values are not (no host-device synchronisation).
    """
    if features.shape != reference.shape:
        raise ValueError(f"features and reference must have the same shape, got {tuple(features.shape)} and "
                         f"{tuple(reference.shape)}")
    length = torch.linalg.vector_norm(features, dim=1, keepdim=True)
    target = torch.linalg.vector_norm(reference.to(features.dtype), dim=1, keepdim=True)
    scale = torch.where(length > _EPS, target / length.clamp_min(_EPS), torch.ones_like(length))
    return features * scale


def with_output_norm(upsampler, norm: str):
    """``upsampler`` (a :class:`~wrcup.models.upsampler.WRCUpsampler`) with ``output_norm`` = ``norm``: itself
    when it has it already, else a shallow copy that shares every parameter; the given module is left as it is."""
    check_output_norm(norm, "norm")
    if upsampler.output_norm == norm:
        return upsampler
    other = copy.copy(upsampler)
    other.output_norm = norm
    return other
