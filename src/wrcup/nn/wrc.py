"""WRC and Converse2D as :class:`~wrcup.nn.UpsampleOperator` modules (thin wrappers over :mod:`wrcup.ops`).

Registered operators (``wrcup.nn.create_operator(name, channels, scale=2, **kw)``):
"wrc-reference", "wrc-aligned", "wrc-exact" (WRC with that ``mode``) and "converse2d".
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_positive_int
from ..ops.layer import LAYER_MODES, PADDING_MODES, PRIOR_CONVS, converse2d, weighted_reverse_conv
from .base import UpsampleOperator
from .registry import register_operator

__all__ = ["WRC", "Converse2d"]


def _softmax_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """1×C×κ×κ kernel: a softmax over the κ² taps of a standard normal draw (both papers' initialisation)."""
    draw = torch.randn(1, channels, kernel_size * kernel_size)
    return torch.softmax(draw, dim=-1).reshape(1, channels, kernel_size, kernel_size)


def _check_geometry(channels, kernel_size, scale, padding, padding_mode, eps):
    check_positive_int(channels, "channels")
    check_positive_int(kernel_size, "kernel_size")
    check_positive_int(scale, "scale")
    check_positive_int(padding, "padding", minimum=0)
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    if not float(eps) > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")


def _resolve_prior_conv(choice: str) -> str:
    """"auto" → "factored" without gradients outside tracing (compile/export see fixed sizes and "direct")."""
    if choice != "auto":
        return choice
    tracing = torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    return "factored" if not (torch.is_grad_enabled() or tracing) else "direct"


class WRC(UpsampleOperator):
    """Weighted reverse convolution layer (Li et al. 2026), B×C×h×w → B×C×(s·h)×(s·w).

    Parameters and state-dict keys are exactly the authors': ``weight`` (1,C,κ,κ), ``bias`` (1,C,1,1),
    ``w_conv_low.weight`` and ``w_conv_high.weight`` (C,C,3,3), so their checkpoints load with strict=True.
    The two 3×3 convolutions use zero padding 1 on the already padded maps, as the reference does.

    Args:
        channels: C.
        kernel_size: κ (2 in the paper's model).
        scale: s.
        padding: p, on every side before the solve (cropped back by p·s).
        padding_mode: "circular" (reference), "reflect", "replicate" or "zeros".
        eps: ε in λ = softplus(b) + ε.
        mode: "reference" (authors' closed form), "aligned" (closed form with a centred kernel) or "exact"
            (minimiser of the weighted objective by PCG, :mod:`wrcup.ops.exact`).
        safeguards: clamp conv outputs and denominators like the authors' CUDA extension (for half precision).
        tol, max_iter: exact-mode solver settings (None: the solver's defaults).
        prior_conv: "direct" or "factored" evaluation of the high-res weight convolution (same result up to
            rounding; "factored" is faster, see :func:`wrcup.ops.layer.conv_of_bilinear_prior`), or "auto":
            "factored" while gradients are off (inference) and not traced, else "direct" (the arithmetic the
            training path has always used). Not saved.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 2,
        scale: int = 2,
        padding: int = 2,
        padding_mode: str = "circular",
        eps: float = 1e-5,
        mode: str = "reference",
        safeguards: bool = False,
        tol: float | None = None,
        max_iter: int | None = None,
        prior_conv: str = "auto",
    ):
        super().__init__()
        _check_geometry(channels, kernel_size, scale, padding, padding_mode, eps)
        check_choice(mode, "mode", LAYER_MODES)
        self.prior_conv = check_choice(prior_conv, "prior_conv", ("auto", *PRIOR_CONVS))
        self.channels, self.scale, self.kernel_size = channels, scale, kernel_size
        self.padding, self.padding_mode, self.eps = padding, padding_mode, float(eps)
        self.mode, self.safeguards, self.tol, self.max_iter = mode, bool(safeguards), tol, max_iter
        self.weight = nn.Parameter(_softmax_kernel(channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.w_conv_low = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.w_conv_high = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×h×w → B×C×(s·h)×(s·w), dtype of x."""
        return weighted_reverse_conv(
            x, self.weight, self.bias, self.w_conv_low.weight, self.w_conv_high.weight,
            scale=self.scale, padding=self.padding, padding_mode=self.padding_mode, eps=self.eps,
            mode=self.mode, safeguards=self.safeguards, tol=self.tol, max_iter=self.max_iter, check_values=False,
            prior_conv=_resolve_prior_conv(self.prior_conv),
        )

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, scale={self.scale}, padding={self.padding}, "
            f"padding_mode={self.padding_mode!r}, mode={self.mode!r}, safeguards={self.safeguards}"
        )


class Converse2d(UpsampleOperator):
    """Converse2D reverse convolution (Huang et al., ICCV 2025), B×C×h×w → B×C×(s·h)×(s·w).

    State dict: ``weight`` (1,C,κ,κ, softmax init) and ``bias`` (1,C,1,1, zeros); λ = sigmoid(b − 9) + ε.
    Choice: the prior x̄ is bilinear upsampling with align_corners=True, the same prior as the WRC layer, so that
    the operator ablation compares the weighting only (not the prior).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 2,
        scale: int = 2,
        padding: int = 2,
        padding_mode: str = "circular",
        eps: float = 1e-5,
    ):
        super().__init__()
        _check_geometry(channels, kernel_size, scale, padding, padding_mode, eps)
        self.channels, self.scale, self.kernel_size = channels, scale, kernel_size
        self.padding, self.padding_mode, self.eps = padding, padding_mode, float(eps)
        self.weight = nn.Parameter(_softmax_kernel(channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×h×w → B×C×(s·h)×(s·w), dtype of x."""
        return converse2d(
            x, self.weight, self.bias, scale=self.scale, padding=self.padding,
            padding_mode=self.padding_mode, eps=self.eps, check_values=False,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, scale={self.scale}, padding={self.padding}, "
            f"padding_mode={self.padding_mode!r}"
        )


def _wrc_factory(mode: str):
    def factory(channels: int, scale: int = 2, **kwargs) -> WRC:
        return WRC(channels, scale=scale, mode=mode, **kwargs)

    factory.__name__ = f"wrc_{mode}"
    factory.__doc__ = f"WRC(channels, scale=scale, mode={mode!r}, **kwargs)"
    return factory


_WRC_SUMMARIES = {
    "reference": "weighted reverse convolution, the authors' closed form",
    "aligned": "weighted reverse convolution, closed form with a centred kernel",
    "exact": "weighted reverse convolution, exact weighted least-squares solve (PCG)",
}
for _mode in LAYER_MODES:
    register_operator(f"wrc-{_mode}", summary=_WRC_SUMMARIES.get(_mode))(_wrc_factory(_mode))
register_operator("converse2d", summary="Converse2D reverse convolution (constant weighting)")(Converse2d)
