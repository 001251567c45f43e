"""ONNX export (wrcup.models.export): the graph in onnxruntime equals the PyTorch model at sizes other than the
traced one (dynamic batch, height and width; one size not square).

The whole-model test uses a one-block ViT with the embedded backbone's architecture and patch size (same code
path: patch embedding, bicubic position-embedding resize, final norm) so that the export takes seconds, not
minutes; tests/cli/test_export.py exports the shipped upsampler through the command line.
"""
from __future__ import annotations

import pytest
import torch

from wrcup.models import build_upsampler, fold_batchnorm
from wrcup.models.bundle import UpsampledBackbone
from wrcup.models.export import MIN_GRID, check_onnx, export_onnx

pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript (the export extra)")
ort = pytest.importorskip("onnxruntime", reason="the check runs the graph in onnxruntime (the export extra)")
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(operator: str = "wrc-reference") -> UpsampledBackbone:
    import timm

    from wrcup.backbones.vit import Backbone

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=1, embed_dim=32, num_heads=2,
                            img_size=70)
    backbone = Backbone(vit, "tiny-dinov2-s14", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    upsampler = build_upsampler(operator, 32, 14)
    for m in upsampler.modules():  # non-trivial BatchNorm statistics, then folded as wrcup.load serves it
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return UpsampledBackbone(backbone, fold_batchnorm(upsampler), {"name": "tiny", "operator": operator}).eval()


@pytest.mark.slow
def test_whole_model_runs_in_onnxruntime_like_pytorch(tmp_path):
    model = tiny_model()
    path = export_onnx(model, tmp_path / "sub" / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and out.name == "features"
    assert all(isinstance(d, str) for i, d in enumerate(inp.shape) if i != 1)  # batch, height, width symbolic
    # grids 4×5 (not square) and 3×3, batches 1 and 3: neither is the traced input (batch 2, grid 4×5)
    assert check_onnx(path, model, grids=((4, 5), (3, 3))) <= 1e-4
    images = torch.rand(3, 3, 14 * 6, 14 * 2)
    got = session.run(None, {"images": images.numpy()})[0]
    with torch.inference_mode():
        want = model(images)
    assert got.shape == (3, 32, 12, 4)
    assert float((torch.from_numpy(got) - want).abs().max() / want.abs().max()) <= 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["wrcup.graph"] == "backbone+upsampler" and meta["wrcup.patch_size"] == "14"
    assert str(MIN_GRID * 14) in meta["wrcup.input_sizes"]


def test_exact_mode_is_refused_with_a_clear_error(tmp_path):
    model = tiny_model("wrc-exact")
    with pytest.raises(ValueError, match="'wrc-exact' operator cannot be exported"):
        export_onnx(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
