"""A frozen timm ViT that returns its patch tokens as an NCHW feature map.

Geometry (one policy, used everywhere):
    An H×W image is resized (bilinear, antialiased, ``align_corners=False``) to the nearest multiple of the
    patch size p per side, at least p: ``H' = p·max(1, floor(H/p + 1/2))`` (same for W). :meth:`Backbone.grid_size`
    gives the token grid ``(h, w) = (H'/p, W'/p)``, :meth:`Backbone.prepare` the resized images. Images whose
    sides already are multiples of p are used as they are. Example, p = 14: 230×300 → 224×294 → grid 16×21.

Position embeddings:
    The stored grid (e.g. DINOv2's 37×37) is resized to (h, w) with bicubic interpolation by target size,
    ``align_corners=False``, no antialiasing, at every resolution (resizing to the stored size is the
    identity), and cached per grid size. Class/register position entries are kept as they are. This matches
    the Hugging Face DINOv2 export of the embedded backbone; timm's own default (antialiased) differs by ~2%.
    Models with rotary embeddings (timm ``Eva``, e.g. DINOv3) get timm's RoPE for the (h, w) grid.

Forward:
    ``patch_embed.proj`` → flatten → ``patch_embed.norm`` → [class, registers] + tokens (+ position embeddings,
    following timm's ``no_embed_class`` layout) → ``norm_pre`` → blocks → final ``norm``. Prefix tokens (timm
    ``num_prefix_tokens``: class and register tokens) are dropped from the patch grid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, checking_values, value_key
from .._io import file_sha256
from ..data.prep import grid_shape, prepare_images

_POS_CACHE_SIZE = 16




def _to_nchw(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """B×(h·w)×C row-major patch tokens → B×C×h×w."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def resize_pos_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a 1×(gh·gw)×C position grid (row-major) to 1×(h·w)×C.

    Args:
        grid: 1×N×C with N = gh·gw; the stored grid is assumed square unless ``grid`` is 1×gh×gw×C.
        size: target (h, w).
    Returns:
        1×(h·w)×C, bicubic by target size, ``align_corners=False``, no antialiasing, computed in float32.
    """
    if grid.ndim == 4:
        _, gh, gw, dim = grid.shape
    else:
        dim = grid.shape[-1]
        gh = gw = math.isqrt(grid.shape[1])
        if gh * gw != grid.shape[1]:
            raise ValueError(f"position grid of {grid.shape[1]} tokens is not square")
    image = grid.reshape(1, gh, gw, dim).permute(0, 3, 1, 2).float()
    resized = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=False)
    return resized.permute(0, 2, 3, 1).reshape(1, size[0] * size[1], dim).to(grid.dtype)


class Backbone(nn.Module):
    """Frozen timm ViT → last-block patch tokens after the final norm, as B×dim×h×w.

    Attributes:
        name: wrcup (or timm) name.
        patch_size, dim, num_heads, num_blocks: architecture.
        mean, std: per-channel normalisation applied inside :meth:`forward` (tuples of 3 floats).
        num_prefix_tokens: class + register tokens dropped from the grid.
        model: the timm ``VisionTransformer`` / ``Eva`` (always in eval mode, no gradients).
        metadata: see :meth:`describe`.

    The backbone stays in eval mode even when a parent module calls ``.train()``, and its outputs are ordinary
    tensors (computed under ``torch.inference_mode`` and copied out) so they can feed a trainable module.
    """

    def __init__(self, model: nn.Module, name: str, *, mean: Iterable[float] | None = None,
                 std: Iterable[float] | None = None, source: str = "timm", timm_name: str | None = None,
                 weights: str | None = None, extra_metadata: dict | None = None):
        super().__init__()
        from timm.layers import PatchEmbed

        if not isinstance(getattr(model, "patch_embed", None), PatchEmbed) or not hasattr(model, "blocks"):
            raise TypeError(f"{name!r} is not a plain timm ViT (needs a timm PatchEmbed and blocks); "
                            f"got {type(model).__name__}")
        patch = tuple(model.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise ValueError(f"{name!r} has a non-square patch {patch}; only square patches are supported")
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.model = model
        self.name = name
        self.source = source
        if timm_name is None:
            arch, tag = cfg.get("architecture", type(model).__name__), cfg.get("tag")
            timm_name = f"{arch}.{tag}" if tag else arch
        self.timm_name = timm_name
        self.weights = weights
        self._weights_identity: str | None = None
        self.patch_size = int(patch[0])
        self.dim = int(model.embed_dim)
        last_attn = model.blocks[-1].attn
        self.num_heads = int(last_attn.num_heads)
        self.num_blocks = len(model.blocks)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.mean = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", (0.5, 0.5, 0.5))))
        self.std = tuple(float(v) for v in (std if std is not None else cfg.get("std", (0.5, 0.5, 0.5))))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values with std > 0, got {self.mean}, {self.std}")
        self._extra_metadata = dict(extra_metadata or {})
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        model.eval().requires_grad_(False)
        super().train(False)

    def weights_identity(self) -> str:
        """What the loaded weights are, for cache keys: ``sha256:…`` of a local weight file (hashed once per
        backbone) or of the embedded backbone's converted weights, else the weights label (``hub:<timm name>``)."""
        if self._weights_identity is None:
            checksum = self._extra_metadata.get("weights_sha256")
            if checksum:
                self._weights_identity = f"sha256:{checksum}"
            elif self.weights and Path(self.weights).is_file():
                self._weights_identity = f"sha256:{file_sha256(self.weights)}"
            else:
                self._weights_identity = str(self.weights)
        return self._weights_identity

    # ----------------------------------------------------------------------------------------- geometry
    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) for an H×W image under the resize-to-nearest-multiple policy."""
        for value, label in ((height, "height"), (width, "width")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        H, W = grid_shape(height, width, self.patch_size)
        return H // self.patch_size, W // self.patch_size

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W → B×3×(p·h)×(p·w): bilinear antialiased resize to the nearest multiple of p per side
        (returned unchanged when both sides already are multiples; :func:`wrcup.data.prep.prepare_images`)."""
        return self._prepare(check_images(images))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`prepare` without the input checks."""
        return prepare_images(images, self.patch_size)

    # ---------------------------------------------------------------------------------------- internals
    def train(self, mode: bool = True) -> "Backbone":
        """No-op: the backbone is frozen and always stays in eval mode."""
        return self

    @property
    def device(self) -> torch.device:
        return self.model.patch_embed.proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.patch_embed.proj.weight.dtype

    def _grid_pos_embed(self, h: int, w: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(prefix position entries or None, 1×(h·w)×C resized grid) or (None, None) without absolute ones."""
        pos_embed = getattr(self.model, "pos_embed", None)
        if pos_embed is None:
            return None, None
        n_prefix = 0 if getattr(self.model, "no_embed_class", False) else self.num_prefix_tokens
        weights = value_key(pos_embed) if checking_values() else None  # traced: sizes may be symbolic, no cache
        if weights is None:
            key, grid = None, None
        else:
            key = (h, w, *weights)
            grid = self._pos_cache.get(key)
        if grid is None:
            stored = getattr(self.model.patch_embed, "grid_size", None)
            source = pos_embed[:, n_prefix:]
            if stored is not None and stored[0] * stored[1] == source.shape[1]:
                source = source.reshape(1, stored[0], stored[1], -1)
            grid = resize_pos_grid(source, (h, w))
            if key is not None:
                if len(self._pos_cache) >= _POS_CACHE_SIZE:
                    self._pos_cache.clear()
                self._pos_cache[key] = grid
        prefix = pos_embed[:, :n_prefix] if n_prefix else None
        return prefix, grid

    def _tokens(self, images: torch.Tensor, layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict, int, int]:
        """Normalised B×3×(p·h)×(p·w) → (B×N×C tokens after the final norm, {layer: B×N×C block outputs}, h, w)."""
        model = self.model
        x = model.patch_embed.proj(images)
        batch, _, h, w = x.shape
        x = model.patch_embed.norm(x.flatten(2).transpose(1, 2))
        prefix_tokens = [t.expand(batch, -1, -1) for t in (getattr(model, "cls_token", None),
                                                           getattr(model, "reg_token", None)) if t is not None]
        prefix_pos, grid_pos = self._grid_pos_embed(h, w)
        if grid_pos is not None and prefix_pos is None:
            x = torch.cat(prefix_tokens + [x + grid_pos.to(x.dtype)], dim=1)  # no_embed_class layout
        else:
            x = torch.cat(prefix_tokens + [x], dim=1)
            if grid_pos is not None:
                x = x + torch.cat([prefix_pos, grid_pos], dim=1).to(x.dtype)
        x = model.norm_pre(x)

        rope = getattr(model, "rope", None)
        rope_embed = rope.get_embed(shape=(h, w)) if rope is not None else None
        mixed = rope_embed is not None and getattr(model, "rope_mixed", False)
        captured = {}
        wanted = set(layers)
        for index, block in enumerate(model.blocks):
            if rope_embed is None:
                x = block(x)
            else:
                x = block(x, rope=rope_embed[index] if mixed else rope_embed)
            if index in wanted:
                captured[index] = x
        return model.norm(x), captured, h, w

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W in [0, 1] → (images − mean) / std with this backbone's statistics, same size and dtype.

        What the backbone feeds its patch embedding, and what the upsamplers take as guidance image.
        """
        check_images(images)
        self._check_device(images)
        return self._standardise(images)

    def _check_device(self, images: torch.Tensor) -> None:
        if images.device != self.device:
            raise ValueError(f"images are on {images.device} but the backbone is on {self.device}; "
                             "move one of them")

    def _standardise(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`normalise` without the input checks."""
        return (images - self._mean.to(images.dtype)) / self._std.to(images.dtype)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Checked [0, 1] images of any size → resized to a multiple of the patch, backbone dtype, normalised."""
        check_images(images)
        self._check_device(images)
        return self._standardise(self._prepare(images).to(self.dtype))

    def _features(self, normalised: torch.Tensor) -> torch.Tensor:
        """Normalised B×3×(p·h)×(p·w) (backbone dtype, unchecked) → B×dim×h×w; :meth:`forward` after the checks."""
        tokens, _, h, w = self._tokens(normalised)
        return _to_nchw(tokens[:, self.num_prefix_tokens:], h, w)

    # ------------------------------------------------------------------------------------------ public
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images B×3×H×W float in [0, 1] → B×dim×h×w last-block patch tokens after the final norm.

        Normalises with ``mean``/``std`` itself; (h, w) = :meth:`grid_size` (H, W). Output dtype = the
        backbone's parameter dtype.
        """
        with torch.inference_mode():
            features = self._features(self._normalise(images))
        return features.clone()  # an ordinary tensor, usable in autograd graphs

    def extract(self, images: torch.Tensor, layers: Iterable[int] = (), facets: bool = False) -> dict:
        """Features, intermediate block outputs and last-block attention facets in one pass.

        Args:
            images: B×3×H×W float in [0, 1].
            layers: block indices (0-based; negative counts from the end) whose output tokens to return.
            facets: also return the last block's query/key/value projections.
        Returns:
            dict with
            - ``"features"``: as :meth:`forward`, B×dim×h×w;
            - ``"layers"``: {i: B×dim×h×w} output of block i (keyed as given), *before* the final norm;
            - ``"facets"`` (empty unless ``facets``): ``"q"``, ``"k"``, ``"v"``: B×dim×h×w from the last block's
              fused qkv projection (heads concatenated, head-major channels; before any q/k norm or RoPE),
              plus ``"cls_q"``, ``"cls_k"``, ``"cls_v"`` (B×dim) when the model has a class token.
        """
        layer_list = []
        for index in layers:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"layers must contain ints, got {index!r}")
            if not -self.num_blocks <= index < self.num_blocks:
                raise ValueError(f"layers entries must be in [-{self.num_blocks}, {self.num_blocks}), got {index}")
            layer_list.append(index)
        normalised_indices = tuple(i % self.num_blocks for i in layer_list)

        qkv_out: list[torch.Tensor] = []
        handles = []
        if facets:
            handles = self._hook_qkv(qkv_out)
        try:
            with torch.inference_mode():
                tokens, captured, h, w = self._tokens(self._normalise(images), normalised_indices)
                npt = self.num_prefix_tokens
                out = {"features": _to_nchw(tokens[:, npt:], h, w),
                       "layers": {i: _to_nchw(captured[i % self.num_blocks][:, npt:], h, w) for i in layer_list},
                       "facets": {}}
                if facets:
                    if len(qkv_out) != 1:
                        raise RuntimeError(f"expected one qkv capture from the last block, got {len(qkv_out)}")
                    q, k, v = qkv_out[0].chunk(3, dim=-1)
                    for key, value in (("q", q), ("k", k), ("v", v)):
                        out["facets"][key] = _to_nchw(value[:, npt:], h, w)
                        if getattr(self.model, "cls_token", None) is not None:
                            out["facets"]["cls_" + key] = value[:, 0]
        finally:
            for handle in handles:
                handle.remove()
        return {"features": out["features"].clone(),
                "layers": {i: t.clone() for i, t in out["layers"].items()},
                "facets": {k: t.clone() for k, t in out["facets"].items()}}

    def _hook_qkv(self, sink: list) -> list:
        """Capture the last block's B×N×3C qkv projection (bias included) into ``sink``."""
        attn = self.model.blocks[-1].attn
        qkv = getattr(attn, "qkv", None)
        if qkv is None:
            raise NotImplementedError(f"{self.name!r}: facets need a fused attn.qkv projection")
        if getattr(attn, "q_bias", None) is not None:
            # timm's Eva adds separate q/v biases through F.linear with qkv.weight, bypassing the module,
            # so compute the projection from the attention input instead.
            def pre_hook(module, args):
                bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
                sink.append(F.linear(args[0], qkv.weight, bias))
            return [attn.register_forward_pre_hook(pre_hook)]
        return [qkv.register_forward_hook(lambda module, args, output: sink.append(output))]

    def describe(self) -> dict:
        """Plain-data description, stored in checkpoints: name, source, timm name/arch, patch, dim, heads,
        blocks, prefix tokens, mean, std, weights (path, "hub" or the embedded cache) and source details."""
        return {
            "name": self.name,
            "source": self.source,
            "timm_name": self.timm_name,
            "timm_arch": self.timm_name.split(".", 1)[0],
            "patch_size": self.patch_size,
            "dim": self.dim,
            "num_heads": self.num_heads,
            "num_blocks": self.num_blocks,
            "num_prefix_tokens": self.num_prefix_tokens,
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": self.weights,
            **self._extra_metadata,
        }

    @property
    def metadata(self) -> dict:
        return self.describe()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, patch_size={self.patch_size}, dim={self.dim}, blocks={self.num_blocks}"
