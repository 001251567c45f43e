"""Input validation shared by every public entry point.

Each helper raises ``ValueError`` or ``TypeError`` with a message that names the
argument and says what was expected, so that bad input never surfaces as a
traceback from deep inside an FFT or a convolution.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(x, name: str, ndim: int | Sequence[int] | None = None, *, floating: bool = True) -> torch.Tensor:
    """Check that ``x`` is a tensor of the given rank (and a floating dtype)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {x.dtype}")
    return x


def checking_values() -> bool:
    """Whether checks that read tensor values may run: False while torch.compile or torch.export traces.

    A value check copies a result to the host (a device synchronisation on GPUs) and breaks a compiled graph, so
    the library runs such checks once, at its public entry points, and never while being traced.
    """
    return not torch.compiler.is_compiling()


def value_key(x: torch.Tensor) -> tuple | None:
    """What identifies the current values of a weight for an in-memory cache of something derived from it:
    (device, dtype, storage address, version counter), so moved, reloaded or updated weights never hit a stale
    entry. None for a tensor created under ``torch.inference_mode`` (a model loaded inside it), which has no
    version counter: do not cache then.
    """
    if x.is_inference():
        return None
    return x.device, x.dtype, x.data_ptr(), x._version


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Reject NaN and Inf values (one host-device synchronisation; skipped while compiling or exporting)."""
    if checking_values() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


#: Largest value accepted in an image that should lie in [0, 1]: resampling overshoots by a few percent at most,
#: while a maximum above this almost surely means 0–255 pixel values.
IMAGE_RANGE_SLACK = 0.5


def check_image_values(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Reject NaN/Inf and values clearly outside [0, 1] (e.g. 0–255 images), with one host-device sync.

    Values within ``IMAGE_RANGE_SLACK`` of [0, 1] pass (interpolation overshoot). Skipped while compiling or
    exporting (see :func:`checking_values`).
    """
    if not checking_values() or images.numel() == 0:
        return images
    # min/max propagate NaN and ±Inf, so one reduction answers both questions
    low, high = (float(v) for v in torch.stack(torch.aminmax(images)).tolist())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if high > 1 + IMAGE_RANGE_SLACK or low < -IMAGE_RANGE_SLACK:
        hint = "; divide 0–255 pixel values by 255" if high > 1 + IMAGE_RANGE_SLACK else ""
        raise ValueError(f"{name} must hold values in [0, 1], got values in [{low:.4g}, {high:.4g}]{hint}")
    return images


def check_images(images, name: str = "images") -> torch.Tensor:
    """A batch of RGB images: a floating B×3×H×W tensor, non-empty, finite, in [0, 1] (see
    :func:`check_image_values`; one host-device synchronisation). The errors say how to convert the usual
    near-misses: a PIL image or NumPy array, uint8 pixels, one image without its batch dimension, channels last.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B×3×H×W floats in [0, 1]), got {type(images).__name__}; "
                        "read files with wrcup.data.load_image, or convert with "
                        "torchvision.transforms.functional.to_tensor")
    if images.ndim == 3 and images.shape[0] == 3:
        raise ValueError(f"{name} must be a batch B×3×H×W, got one image of shape {tuple(images.shape)}; "
                         f"add the batch dimension: {name}[None]")
    check_tensor(images, name, 4, floating=False)
    if not images.is_floating_point():
        hint = f"; convert 0–255 pixels with {name}.float() / 255" if images.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {images.dtype}"
                        f"{hint}")
    if images.shape[1] != 3:
        hint = (f"; it looks channels-last: use {name}.permute(0, 3, 1, 2)" if images.shape[-1] == 3 else
                f"; repeat a grey channel with {name}.expand(-1, 3, -1, -1)" if images.shape[1] == 1 else
                f"; for RGBA, composite the alpha channel or drop it with {name}[:, :3]" if images.shape[1] == 4
                else "")
        raise ValueError(f"{name} must have 3 channels (RGB) in dimension 1, got shape {tuple(images.shape)}{hint}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(images.shape)}")
    check_image_values(images, name)
    return images


def check_channels(x: torch.Tensor, name: str, channels: int, dim: int = 1) -> torch.Tensor:
    if x.shape[dim] != channels:
        raise ValueError(f"{name} must have {channels} channels in dimension {dim}, got shape {tuple(x.shape)}")
    return x


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def resolve_device(value: str | None, name: str = "device") -> str:
    """A device string checked against this machine: ``None`` → ``"cuda"`` when a CUDA GPU is available, else
    ``"cpu"``; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are accepted when present. ValueError naming ``name``."""
    if value is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    accepted = "cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be {accepted}; got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {value!r}: no CUDA GPU is available here (torch.cuda.is_available() is "
                             "False); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} {value!r}: this machine has {count} CUDA device(s), cuda:0 … cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{name} {value!r}: Apple MPS is not available here; use cpu")
    elif device.type != "cpu":
        raise ValueError(f"{name} must be {accepted}; got {value!r}")
    return value
