"""ONNX export of a loaded model (backbone + upsampler, or the upsampler alone), with dynamic batch and size.

The exported graphs:

* whole model: input ``images`` B×3×H×W in [0, 1] → output ``features`` B×dim×2h×2w, equal to ``model(images)``;
* ``upsampler_only``: inputs ``image`` B×3×H×W (backbone-normalised) and ``features`` B×dim×h×w → output
  ``upsampled`` B×dim×2h×2w, equal to ``model.upsampler(image, features)``.

Batch, height and width are dynamic, with H = p·h and W = p·w multiples of the patch size p (14 for the embedded
backbone) and h, w ≥ 2. The whole-model graph therefore takes images whose sides already are multiples of p: the
backbone's resize to the nearest multiple (:meth:`~wrcup.backbones.vit.Backbone.prepare`) is not part of it. Inside,
the position embeddings are resized to the token grid (bicubic) at run time, and the WRC / Converse2D solves use the
DFT as real matrix products (:mod:`wrcup.ops._matmul_dft`; ONNX has no complex tensors). ``wrc-exact`` cannot be
exported: its PCG solver runs until convergence, a data-dependent loop.

Needs the ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` for :func:`check_onnx`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path

__all__ = ["export_onnx", "check_onnx", "example_inputs", "MIN_GRID"]

#: Smallest token grid side the exported graphs accept (the circular padding of the WRC layers needs 2).
MIN_GRID = 2
_EXAMPLE_GRID = (4, 5)  # not square and with batch 2, so that no dimension is specialised while tracing


def _describe(model: nn.Module) -> tuple[int, int, str]:
    """(patch size, feature dim, operator name) of an UpsampledBackbone."""
    up = model.upsampler
    return int(model.backbone.patch_size), int(up.dim), str(getattr(up, "operator_name", type(up).__name__))


def example_inputs(model: nn.Module, upsampler_only: bool = False, grid: tuple[int, int] = _EXAMPLE_GRID,
                   batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the exported graph for a token grid ``grid``: (images,) or (image, features), float32.

    Images are uniform in [0, 1]; for ``upsampler_only`` the image is normalised by the backbone and the features
    are the backbone's features of it.
    """
    patch, _, _ = _describe(model)
    g = torch.Generator().manual_seed(seed)
    device = model.backbone.device
    images = torch.rand(batch, 3, patch * grid[0], patch * grid[1], generator=g).to(device)
    if not upsampler_only:
        return (images,)
    with torch.inference_mode():
        features = model.backbone(images).clone()
    return model.backbone.normalise(images), features


def _dynamic_shapes(patch: int, upsampler_only: bool):
    Dim = torch.export.Dim
    batch = Dim("batch", min=1, max=1024)
    gh, gw = Dim("grid_h", min=MIN_GRID, max=1024), Dim("grid_w", min=MIN_GRID, max=1024)
    image = {0: batch, 2: patch * gh, 3: patch * gw}
    if not upsampler_only:
        return {"images": image}
    return {"image": image, "features": {0: batch, 2: gh, 3: gw}}


class _WholeModel(nn.Module):
    """``model(images)`` with a plain signature for the exporter."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class _Upsampler(nn.Module):
    def __init__(self, upsampler: nn.Module):
        super().__init__()
        self.upsampler = upsampler

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.upsampler(image, features)


def export_onnx(model: nn.Module, path: str | Path, upsampler_only: bool = False, opset: int | None = None) -> Path:
    """Write ``model`` (an :class:`~wrcup.models.bundle.UpsampledBackbone`, e.g. from ``wrcup.load()``) as ONNX.

    Args:
        model: the loaded model, on CPU, float32.
        path: the .onnx file to write (atomically; parent folders are created).
        upsampler_only: export ``model.upsampler`` alone (inputs: normalised image and low-res features).
        opset: ONNX opset (default: the exporter's, ≥ 18).
    Returns:
        ``path``. Raises ValueError for a model that cannot be exported (``wrc-exact``) and ImportError without
        the ``onnxscript`` package.
    """
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        raise ImportError("ONNX export needs the onnx and onnxscript packages: pip install 'wrcup[export]'") from None
    patch, _, operator = _describe(model)
    if operator == "wrc-exact":
        raise ValueError("the 'wrc-exact' operator cannot be exported to ONNX: its PCG solver iterates until "
                         "convergence (a data-dependent loop); use a closed-form checkpoint")
    was_training = model.training
    model.eval()
    module = _Upsampler(model.upsampler) if upsampler_only else _WholeModel(model)
    inputs = example_inputs(model, upsampler_only)
    names = ["image", "features"] if upsampler_only else ["images"]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the exporter's notes on unused axis names and on its own internals are not the user's business
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(
                module, inputs, dynamo=True, dynamic_shapes=_dynamic_shapes(patch, upsampler_only),
                input_names=names, output_names=["upsampled" if upsampler_only else "features"],
                opset_version=opset, verbose=False)
    finally:
        model.train(was_training)
    meta = program.model.metadata_props
    meta["wrcup.graph"] = "upsampler" if upsampler_only else "backbone+upsampler"
    meta["wrcup.operator"] = operator
    meta["wrcup.patch_size"] = str(patch)
    meta["wrcup.input_sizes"] = f"height and width multiples of {patch}, at least {MIN_GRID * patch}"
    meta["wrcup.name"] = str(model.metadata.get("name", model.metadata.get("backbone", "")))
    path = Path(path)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    return path


def check_onnx(path: str | Path, model: nn.Module, upsampler_only: bool = False,
               grids=((4, 5), (3, 3))) -> float:
    """Largest relative error max|onnx − torch| / max|torch| of the exported graph in onnxruntime against
    ``model`` over random inputs on each token grid of ``grids``, with batch sizes 1, 3, 1, … (the graph was
    traced with batch 2). Needs ``onnxruntime``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("checking an ONNX export needs onnxruntime: pip install 'wrcup[export]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    worst = 0.0
    for seed, grid in enumerate(grids):
        inputs = example_inputs(model, upsampler_only, grid=tuple(grid), batch=(1, 3)[seed % 2], seed=seed)
        with torch.inference_mode():
            want = (model.upsampler(*inputs) if upsampler_only else model(*inputs)).float().cpu()
        got = session.run(None, {n: t.float().cpu().numpy() for n, t in zip(names, inputs)})[0]
        err = (torch.from_numpy(got) - want).abs().max() / want.abs().max()
        worst = max(worst, float(err))
    return worst
