"""A frozen backbone and a trained upsampler in one module: what ``wrcup.load`` returns."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from .._checks import check_choice, check_images
from ..data.prep import prepare_images
from ..ops.guided import fit_guided_at, guided_upsample
from .sizing import plan_passes, resize_features, resolve_output_size
from .growth import grow_guided
from .tiling import (DEFAULT_MAX_MEMORY, RESERVED_BYTES, learned_passes_to_guidance, parse_memory, pass_bytes,
                     upsample_bounded)
from .to_image import FINAL_STEPS
from .names import DEFAULT_CHECKPOINT, SHIPPED_CHECKPOINTS
from .output_norm import check_output_norm
from .stacking import upsample
from .upsampler import UnguidedUpsampler, WRCUpsampler, _check_inputs, build_upsampler, parameter_dtype


class UpsampledBackbone(nn.Module):
    """``model(images)``: B×3×H×W in [0, 1] → B×dim×(2h)×(2w) upsampled backbone features, or any other size
    with ``output_size=(H', W')`` or ``scale=2 | 4 | 8 | "image"``.

    Attributes:
        backbone: the frozen backbone; ``model.backbone(images)`` gives its own B×dim×h×w features.
        upsampler: the trained upsampler (``forward(normalised_image, features)``).
        metadata: the checkpoint's metadata dict (backbone, dim, patch size, operator, training record …).

    Dtypes: images may be float16, bfloat16, float32 or float64; the backbone and the upsampler compute in their
    own parameter dtype (float32 as loaded; convert with ``model.to(dtype)``, e.g. ``model.double()``) and the
    features come back in the dtype of ``images``. The FFT solves inside the WRC layers always run in float32 or
    float64 (there are no half-precision FFTs on CPU, and none for bfloat16), also under ``torch.autocast``.
    """

    def __init__(self, backbone: nn.Module, upsampler: nn.Module, metadata: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.upsampler = upsampler
        self.metadata = dict(metadata or {})

    def forward(self, images: torch.Tensor, return_low_res: bool = False, *, output_size=None, scale=None,
                max_memory: int | str = DEFAULT_MAX_MEMORY, final_step: str = "bilinear"):
        """images: B×3×H×W float in [0, 1] → B×dim×H'×W' (and the backbone's B×dim×h×w if ``return_low_res``), in
        the dtype of ``images``.

        Sizes that are not multiples of the patch size follow the backbone's policy (resized to the nearest
        multiple; see :mod:`wrcup.backbones`), giving the token grid h×w.

        Args:
            output_size: (H', W'), any positive ints, any aspect ratio.
            scale: 2, 4 or 8 (H' = scale·h, W' = scale·w) or "image" (H' × W' = H × W, the images as given).
            Neither: H' × W' = 2h × 2w, one pass of the trained upsampler (the default).
            max_memory: memory budget, bytes or a string such as "4G" (default 4 GiB), of which 1 GiB is kept
                for the rest of the process (:data:`~wrcup.models.tiling.RESERVED_BYTES`); a budget too small
                for even the smallest tile raises MemoryError naming the smallest that fits.
                A pass whose estimate exceeds it runs on overlapping tiles blended with linear ramps
                (:mod:`wrcup.models.tiling`; agrees with the untiled pass to a mean cosine ≥ 0.995); passes that
                fit run as before. The output itself (B×dim×H'×W', float32) is not counted: for outputs too large
                to hold, see :func:`wrcup.models.tiling.upsample_bounded` with a ``sink``. The backbone is never
                tiled (a ViT's features depend on global context); its attention is
                ``F.scaled_dot_product_attention``, which does not hold the token×token matrix.

        Any size is reached by repeating the trained 2× upsampler until the grid reaches or exceeds H'×W' (pass i
        guided by the same image at the effective patch size p/2^i, see :func:`wrcup.models.upsample`), then
        resizing bilinearly with antialiasing to exactly H'×W' (see :mod:`wrcup.models.sizing`).

        ``final_step="guided"`` (with ``output_size`` or ``scale``) takes the last part of the way as
        ``wrcup upsample --to-image`` does: the learned passes stop at the first grid that reaches a quarter of
        the prepared image (the resolution of the network's image guidance,
        :func:`~wrcup.models.tiling.learned_passes_to_guidance`), and the image-guided step
        (:func:`wrcup.ops.guided_upsample`, guided by ``images``) enlarges from there to H'×W', so feature edges
        follow the image's edges (docs/RESULTS.md, "The last step to pixel resolution"). Where those passes
        already reach H'×W' it changes nothing. Without gradients the step never holds its coefficients at the
        output size (:func:`~wrcup.models.growth.grow_guided`), so it needs little more memory than the output.

        The input is checked here, once: NaN/Inf and values clearly outside [0, 1] (a maximum above 1.5, e.g.
        0–255 pixels) raise ValueError. That check reads two numbers back to the host; nothing else in the forward
        pass does, and nothing is read while torch.compile or torch.export traces the model.
        """
        check_choice(final_step, "final_step", FINAL_STEPS)
        x = self._checked_input(images)
        out_dtype = images.dtype
        p = self.backbone.patch_size
        budget = parse_memory(max_memory, "max_memory")
        target = None
        if output_size is not None or scale is not None:  # the default path stays free of size arithmetic (export)
            target = resolve_output_size((x.shape[-2] // p, x.shape[-1] // p), tuple(images.shape[-2:]),
                                         output_size=output_size, scale=scale)
        tracing = torch.compiler.is_compiling()  # traced graphs take one untiled path, with no size checks
        guide, feats, low = self._encode(x, tracing)
        learned = target
        if target is not None and final_step == "guided":
            learned = guided_learned_grid(tuple(low.shape[-2:]), target, tuple(x.shape[-2:]))
        size = None if tracing else learned or (2 * low.shape[-2], 2 * low.shape[-1])
        if size is not None and self._exceeds_budget(tuple(low.shape[-2:]), size, feats, budget):
            _check_inputs(guide, feats, self.upsampler.dim, self.upsampler.patch_size)
            high = upsample_bounded(self.upsampler, guide, feats, size, max_memory=budget)
        elif learned is None:
            high = self.upsampler(guide, feats)
        else:
            high = upsample_to_size(self.upsampler, guide, feats, learned)
        if learned != target:
            high = guided_last_step(high, images, target)
        high = high.to(out_dtype)
        return (high, low.to(out_dtype)) if return_low_res else high

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images B×3×H×W float in [0, 1] → ``(guide, features)``, what the upsampler takes (e.g. for
        :func:`wrcup.models.tiling.upsample_bounded` with a ``sink``), both in the upsampler's dtype:

        * ``guide``: B×3×(p·h)×(p·w), the images resized once to multiples of the patch size
          (:func:`wrcup.data.prep.prepare_images`) and normalised by the backbone;
        * ``features``: B×dim×h×w, the backbone's features of them.

        Checked once, as in :meth:`forward`.
        """
        guide, feats, _ = self._encode(self._checked_input(images), torch.compiler.is_compiling())
        return guide, feats

    def _checked_input(self, images: torch.Tensor) -> torch.Tensor:
        """The one value check of the input, then the images at the backbone's patch grid, in its dtype; the
        grid must be large enough for the upsampler (its ``min_grid``)."""
        check_images(images, "images")
        self.backbone._check_device(images)
        p = self.backbone.patch_size
        x = prepare_images(images.to(self.backbone.dtype), p)
        need = getattr(self.upsampler, "min_grid", 1)
        if x.shape[-2] < need * p or x.shape[-1] < need * p:
            shortest = ((2 * need - 1) * p + 1) // 2  # the smallest side that rounds to `need` patches
            raise ValueError(f"images of size {images.shape[-2]}×{images.shape[-1]} give a "
                             f"{x.shape[-2] // p}×{x.shape[-1] // p} token grid (patch {p}); the upsampler needs at "
                             f"least {need} tokens per side: resize the images to at least {shortest} pixels on "
                             "each side")
        return x

    def _encode(self, x: torch.Tensor, tracing: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prepared images x → (guide, features in the upsampler's dtype, features in the backbone's dtype)."""
        backbone = self.backbone
        if tracing:
            low = backbone._features(backbone._standardise(x))
        else:
            with torch.inference_mode():
                low = backbone._features(backbone._standardise(x))
            low = low.clone()  # an ordinary tensor, not an inference-mode one
        dtype = parameter_dtype(self.upsampler, low.dtype)
        return backbone._standardise(x.to(dtype)), low.to(dtype), low

    def _exceeds_budget(self, grid: tuple[int, int], size: tuple[int, int], features: torch.Tensor,
                        budget: int) -> bool:
        """Whether the largest upsampler pass from ``grid`` towards ``size`` needs more than ``budget`` bytes (then
        the passes run on tiles); only the repeatable upsamplers can be tiled."""
        passes = plan_passes(grid, size)
        if not passes or not isinstance(self.upsampler, (WRCUpsampler, UnguidedUpsampler)):
            return False
        last_grid = (grid[0] << (passes - 1), grid[1] << (passes - 1))
        return pass_bytes(last_grid, features.shape[1], features.shape[0]) > budget - RESERVED_BYTES


def guided_learned_grid(grid: tuple[int, int], size: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """Where the learned passes stop before the guided last step to ``size``: the grid after
    :func:`~wrcup.models.tiling.learned_passes_to_guidance` passes from ``grid`` (an image of ``image_hw`` fed to
    the backbone), or ``size`` itself when fewer passes reach it, or when that grid already exceeds ``size`` along
    one side (the guided step only enlarges; the resize then shrinks as usual)."""
    passes = learned_passes_to_guidance(grid, image_hw)
    if plan_passes(grid, size) <= passes:
        return size
    mid = (grid[0] << passes, grid[1] << passes)
    return mid if mid[0] <= size[0] and mid[1] <= size[1] else size


def guided_last_step(features: torch.Tensor, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`wrcup.ops.guided_upsample` of ``features`` (B×C×h×w) to ``size``, guided by ``images`` (B×3×H×W in
    [0, 1]). When no gradient is needed, the coefficients are grown block by block into the output
    (:func:`~wrcup.models.growth.grow_guided`) instead of as three maps of the output's size per channel; the
    values agree to float32 rounding. Returns the features' dtype (half precision is computed in float32, and the
    fit ignores autocast, as in :func:`~wrcup.ops.guided_upsample`)."""
    if torch.is_grad_enabled() and (features.requires_grad or images.requires_grad):
        return guided_upsample(features, images, size)
    a, b, guide = fit_guided_at(features, images, size)
    out = a.new_empty(a.shape[0], a.shape[1], *size)
    for n in range(a.shape[0]):
        grow_guided(a[n], b[n], guide[n], out[n])
    return out.to(features.dtype)


def upsample_to_size(upsampler: nn.Module, image: torch.Tensor, features: torch.Tensor,
                     size: tuple[int, int]) -> torch.Tensor:
    """Features B×C×h×w → B×C×H×W with a 2× ``upsampler``: :func:`~wrcup.models.sizing.plan_passes` passes (the
    fewest whose grid reaches or exceeds H×W; pass i guided by ``image`` at the effective patch size p/2^i, see
    :func:`~wrcup.models.upsample`), then :func:`~wrcup.models.sizing.resize_features` to exactly H×W.

    ``image``: B×3×(p·h)×(p·w), backbone-normalised. No pass: the features themselves are resized; one pass:
    ``upsampler(image, features)``, so any 2× module works; more: a WRCUpsampler or UnguidedUpsampler.
    """
    passes = plan_passes(tuple(features.shape[-2:]), size)
    if passes > 1 and not isinstance(upsampler, (WRCUpsampler, UnguidedUpsampler)):
        raise ValueError(f"output size {size[0]}×{size[1]} needs {passes} passes of the upsampler, which only "
                         f"a WRCUpsampler or UnguidedUpsampler can repeat (this one is a {type(upsampler).__name__}); "
                         f"ask for at most twice the grid {features.shape[-2]}×{features.shape[-1]}")
    if passes == 0:
        high = features
    elif passes == 1:
        high = upsampler(image, features)
    else:
        high = upsample(image, features, [upsampler] * passes)
    return resize_features(high, size)


def checkpoint_path(name_or_path: str | Path) -> Path:
    """Resolve a shipped checkpoint name or a local path to an existing .safetensors file."""
    if str(name_or_path) in SHIPPED_CHECKPOINTS:
        ref = resources.files("wrcup") / "checkpoints" / SHIPPED_CHECKPOINTS[str(name_or_path)]
        path = Path(str(ref))
        if not path.is_file():
            raise FileNotFoundError(f"shipped checkpoint {name_or_path!r} is missing from the installation ({path})")
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise ValueError(f"{path} is a folder with {len(found)} .safetensors files; pass the file itself")
        path = found[0]
    if not path.is_file():
        known = ", ".join(sorted(SHIPPED_CHECKPOINTS))
        raise FileNotFoundError(f"no checkpoint named {str(name_or_path)!r}: not a shipped name ({known}) and no such file")
    return path


def load(name_or_path: str | Path = DEFAULT_CHECKPOINT, device: str | torch.device | None = None,
         backbone_weights: str | Path | None = None, fold_bn: bool = True,
         output_norm: str | None = None) -> UpsampledBackbone:
    """Load a trained upsampler and its frozen backbone.

    Args:
        name_or_path: a shipped checkpoint name (:data:`~wrcup.models.names.SHIPPED_CHECKPOINTS`; default
            :data:`~wrcup.models.names.DEFAULT_CHECKPOINT`) or a path to a .safetensors checkpoint written by
            ``wrcup train``.
        device: where to put the model (default CPU).
        backbone_weights: local weights for the backbone named in the checkpoint (needed offline for
            backbones other than the embedded one).
        output_norm: "learned" or "bilinear" (:mod:`wrcup.models.output_norm`); None: the checkpoint's
            ``output_norm`` entry, "learned" for checkpoints without one.
    """
    from .. import backbones
    from .checkpoint import load_checkpoint

    path = checkpoint_path(name_or_path)
    try:
        state, meta = load_checkpoint(path)
    except ValueError as err:
        if path.suffix.lower() == ".safetensors":
            raise ValueError(f"name_or_path {str(name_or_path)!r}: {err}") from None
        raise ValueError(f"name_or_path {str(name_or_path)!r} is not a wrcup checkpoint: expected a shipped name "
                         f"({', '.join(sorted(SHIPPED_CHECKPOINTS))}) or a .safetensors file written by wrcup train "
                         f"or wrcup convert") from None
    backbone = backbones.load(meta["backbone"], weights=backbone_weights, device=device)
    if backbone.dim != meta["dim"] or backbone.patch_size != meta["patch_size"]:
        raise ValueError(
            f"checkpoint expects dim={meta['dim']}, patch={meta['patch_size']} but backbone {meta['backbone']!r} "
            f"has dim={backbone.dim}, patch={backbone.patch_size}")
    norm = check_output_norm(meta.get("output_norm", "learned") if output_norm is None else output_norm)
    meta = {**meta, "output_norm": norm}
    upsampler = build_upsampler(meta["operator"], meta["dim"], meta["patch_size"], residual=meta.get("residual", False),
                                output_norm=norm)
    missing, unexpected = upsampler.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {name_or_path} does not match the {meta['operator']} upsampler: "
                         f"missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                         f"unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    upsampler.eval().requires_grad_(False)
    if fold_bn:
        from .fuse import fold_batchnorm

        upsampler = fold_batchnorm(upsampler)
    model = UpsampledBackbone(backbone, upsampler, meta).eval()  # an inference model: eval mode throughout
    return model.to(device) if device is not None else model
