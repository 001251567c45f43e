"""Inference-time folding of BatchNorm into the convolution that feeds it, and the fused oneDNN convolutions a
folded network runs without gradients on CPU."""
from __future__ import annotations

import copy
import weakref

import torch

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .._checks import value_key


def _fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    setattr(parent, conv_name, fuse_conv_bn_eval(getattr(parent, conv_name), getattr(parent, bn_name)))
    setattr(parent, bn_name, nn.Identity())


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` in which every BatchNorm2d directly fed by a Conv2d is folded into it.

    Pairs are found structurally: consecutive ``(Conv2d, BatchNorm2d)`` children of an ``nn.Sequential``, and
    sibling attributes ``convN``/``bnN`` (the :class:`~wrcup.models.upsampler.Bottleneck` layout, whose forward
    applies ``bnN`` right after ``convN``). Outputs are unchanged up to float rounding; the state dict of the
    copy no longer has the BatchNorm entries, so keep the original for training or saving.
    """
    folded = copy.deepcopy(module).eval()
    for parent in list(folded.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for a, b in zip(names, names[1:]):
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d):
                    _fold(parent, a, b)
            continue
        for name, child in children.items():
            conv_name = "conv" + name[2:]
            if name.startswith("bn") and isinstance(child, nn.BatchNorm2d) and isinstance(children.get(conv_name), nn.Conv2d):
                _fold(parent, conv_name, name)
    return folded


# An eager float32 convolution on CPU re-lays out its weight (and an NCHW input and output) for oneDNN on every
# call, and BatchNorm-folded blocks then spend separate passes on each ReLU and residual add. Without gradients,
# a BatchNorm-folded network instead runs each convolution as one oneDNN call on channels-last tensors, with its
# weight laid out once (cached per module) and the ReLU / residual add applied inside the call. Same arithmetic
# per output element; tests/models/test_fused_inference.py compares both paths.
def _has_fused_conv() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


_FUSED_CONV = _has_fused_conv()
_PACKED_WEIGHTS: "weakref.WeakKeyDictionary[nn.Conv2d, tuple]" = weakref.WeakKeyDictionary()


def bf16_autocast() -> bool:
    """Whether CPU autocast to bfloat16 is on: the fused convolutions then compute in bfloat16, as autocast's
    own convolutions would (with bfloat16 matrix units, e.g. Intel AMX, they run faster; benchmarks/models.py)."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def cpu_bfloat16_units() -> str | None:
    """This CPU's bfloat16 matrix units as torch sees them: "AMX", "AVX512-BF16" or None (none, or unknown)."""
    def has(name: str) -> bool:
        probe = getattr(torch.cpu, name, None)  # private probes of torch.cpu; absent in some builds
        try:
            return bool(probe()) if callable(probe) else False
        except RuntimeError:
            return False

    if has("_is_amx_tile_supported"):
        return "AMX"
    return "AVX512-BF16" if has("_is_avx512_bf16_supported") else None


def fused_inference(x: torch.Tensor) -> bool:
    """Whether the fused inference convolutions apply to ``x``: gradients off (no_grad / inference_mode), a
    float32 CPU tensor (or bfloat16 under bfloat16 autocast), oneDNN available, and not traced (compile, export
    and ONNX see the plain modules)."""
    return (_FUSED_CONV and not torch.is_grad_enabled() and x.device.type == "cpu"
            and (x.dtype == torch.float32 or x.dtype == torch.bfloat16 and bf16_autocast())
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export())


def _packed_weight(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv.weight`` in oneDNN's layout for input shape ``x.shape`` and ``x``'s dtype, cached until the weight
    changes."""
    weights = value_key(conv.weight)  # None (no version counter): lay it out on every call
    key = None if weights is None else (*weights, tuple(x.shape), x.dtype)
    hit = _PACKED_WEIGHTS.get(conv)
    if key is not None and hit is not None and hit[0] == key:
        return hit[1]
    packed = torch.ops.mkldnn._reorder_convolution_weight(
        conv.weight.to(x.dtype), list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        list(x.shape))
    if key is not None:
        _PACKED_WEIGHTS[conv] = (key, packed)
    return packed


def conv_fused(conv: nn.Conv2d, x: torch.Tensor, relu: bool, add: torch.Tensor | None = None) -> torch.Tensor:
    """relu?(conv(x) + add) in one oneDNN call; x (and ``add``) channels-last CPU, conv zero-padded. float32, or
    bfloat16 under bfloat16 autocast (input, weight and bias cast; bfloat16 out). A float32 ``add`` under
    bfloat16 is added after the call, in float32, as autocast's own add would: a residual keeps its precision."""
    dtype = torch.bfloat16 if bf16_autocast() else torch.float32
    x = x.to(dtype)
    bias = None if conv.bias is None else conv.bias.to(dtype)
    args = (_packed_weight(conv, x), bias, list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups)
    if add is not None and add.dtype != dtype:
        out = torch.ops.mkldnn._convolution_pointwise(x, *args, "none", [], "").to(add.dtype) + add
        return out.relu_() if relu else out
    if add is None:
        return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu" if relu else "none", [], "")
    return torch.ops.mkldnn._convolution_pointwise.binary(x, add, *args, "add", None, "relu" if relu else None, [],
                                                          "" if relu else None)


def folded(*norms: nn.Module) -> bool:
    """BatchNorms replaced by identities (:func:`~wrcup.models.fold_batchnorm`): each conv is followed directly
    by its ReLU or add."""
    return all(isinstance(m, nn.Identity) for m in norms)
