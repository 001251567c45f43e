"""``--precision`` of the inference commands: float32, or bfloat16 autocast around the model.

Only the backbone and the upsampler's convolutions change precision: the WRC solves and the guided filter turn
autocast off inside (docs/DESIGN.md, the "Precision" paragraph). Measured speed and agreement: docs/BENCHMARKS.md.
"""
from __future__ import annotations

import contextlib
from typing import Callable

# --precision: float32, or bfloat16 autocast (cpu and cuda only: torch's autocast device types used here)
INFERENCE_PRECISIONS = ("float32", "bfloat16")


def precision_context(precision: str, device: str):
    """The context the model runs in for ``--precision``: bfloat16 autocast on ``device``'s type, or nothing."""
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def check_precision(precision: str, device: str, warn: Callable[[str], None]) -> None:
    """--precision bfloat16 needs a cpu or cuda device (ValueError naming the flag); on a CPU without bfloat16
    units it works but slowly, which ``warn`` (a one-line reporter) is told."""
    import torch

    if precision == "float32":
        return
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"--precision bfloat16 runs on cpu or cuda, not on {device!r}; use --precision float32")
    if kind == "cpu":
        from ..models.fuse import cpu_bfloat16_units

        if cpu_bfloat16_units() is None:
            warn("--precision bfloat16 on a CPU without bfloat16 units (wrcup info): it computes, but "
                 "expect it to be much slower than float32")
