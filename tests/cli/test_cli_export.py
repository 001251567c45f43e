"""``wrcup export onnx``: the shipped upsampler as ONNX, run in onnxruntime against PyTorch."""
from __future__ import annotations

import pytest

import wrcup
from wrcup.cli.main import main
from wrcup.models.export import check_onnx

pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript (the export extra)")
ort = pytest.importorskip("onnxruntime", reason="the check runs the graph in onnxruntime (the export extra)")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_upsampler_only_export_matches_pytorch(tmp_path, capsys):
    out = tmp_path / "up.onnx"
    assert main(["export", "onnx", "--upsampler-only", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"wrote {out}" in line and "multiples of 14" in line and "max relative error" in line
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "features"]
    # the shipped model (BatchNorm folded, as wrcup.load serves it) at grids 4×5 and 3×3, batches 1 and 3
    assert check_onnx(out, wrcup.load(), upsampler_only=True, grids=((4, 5), (3, 3))) <= 1e-4


def test_export_needs_out(capsys):
    with pytest.raises(SystemExit):
        main(["export", "onnx"])
    assert "--out" in capsys.readouterr().err
