"""scripts/learning_curve.py on one real photo: bilinear and two snapshots, resumed, plotted."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from script_helpers import load_script

REPO = Path(__file__).resolve().parents[2]


def _script():
    return load_script("learning_curve")


def test_learning_curve_runs_resumes_and_plots(tmp_path, real_photos, capsys):
    lc = _script()
    run = tmp_path / "run"
    run.mkdir()
    shipped = REPO / "src" / "wrcup" / "checkpoints" / "wrc-dinov2-s14-imgfocus.safetensors"
    shutil.copy(shipped, run / "step-200.safetensors")
    (run / "step-notanumber.safetensors").write_bytes(b"")  # ignored: not a snapshot name
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(real_photos[0], images / real_photos[0].name)
    out = tmp_path / "curve.json"
    argv = [str(run), "--set", f"one={images}:1", "--sizes", "28", "--cache", str(tmp_path / "cache"),
            "--out", str(out), "--data-root", str(tmp_path)]
    assert lc.main(argv) == 0
    assert json.loads(out.read_text())["sets"]["one"]["folder"] == "$DATA/images"
    cells = json.loads(out.read_text())["cells"]
    assert [(c["method"], c["step"]) for c in cells] == [("bilinear", None), ("learned", 200)]
    assert all(0.0 < c["cosine"] <= 1.0 and c["num_images"] == 1 for c in cells)
    # a second snapshot: only its cell is computed, the others are kept as they were
    shutil.copy(shipped, run / "step-1000.safetensors")
    capsys.readouterr()
    assert lc.main(argv) == 0
    printed = capsys.readouterr().out
    assert "step   1000" in printed and "step    200" not in printed
    again = json.loads(out.read_text())["cells"]
    assert again[:2] == cells and again[2]["step"] == 1000
    assert again[2]["cosine"] == pytest.approx(cells[1]["cosine"], abs=1e-6)  # same weights, same number
    assert out.with_suffix(".png").stat().st_size > 1000
    # a second method on the same snapshots: only its cells are new; same directions, so the same cosine
    assert lc.main(argv + ["--methods", "learned,learned-bilinear-norm"]) == 0
    third = json.loads(out.read_text())["cells"]
    assert third[:3] == again
    normed = {c["step"]: c for c in third[3:]}
    assert [c["method"] for c in third[3:]] == ["learned-bilinear-norm"] * 2 and set(normed) == {200, 1000}
    assert normed[200]["cosine"] == pytest.approx(cells[1]["cosine"], abs=1e-5)
    assert normed[200]["nmse"] != pytest.approx(cells[1]["nmse"], abs=1e-4)
    # a moving-average snapshot (--ema): its own cells, marked, beside the trained weights' cells of that step
    shutil.copy(shipped, run / "step-1000.ema.safetensors")
    assert lc.main(argv) == 0
    fourth = json.loads(out.read_text())["cells"]
    assert fourth[:5] == third and len(fourth) == 6
    assert fourth[5]["weights"] == "ema" and fourth[5]["step"] == 1000 and fourth[5]["method"] == "learned"
    assert all("weights" not in c for c in fourth[:5])
    assert fourth[5]["cosine"] == pytest.approx(again[2]["cosine"], abs=1e-6)  # same file contents


def test_learning_curve_breaks_a_set_down_by_folder(tmp_path, real_photos):
    """A set spread over sub-folders (DAVIS sequences) gets per-folder means in each cell; they average back to
    the cell's mean, image-weighted."""
    lc = _script()
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(REPO / "src" / "wrcup" / "checkpoints" / "wrc-dinov2-s14-imgfocus.safetensors",
                run / "step-5.safetensors")
    images = tmp_path / "frames"
    for sub, photo in (("one", real_photos[0]), ("one", real_photos[1]), ("two", real_photos[2])):
        (images / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, images / sub / photo.name)
    out = tmp_path / "curve.json"
    assert lc.main([str(run), "--set", f"frames={images}:1", "--sizes", "28", "--out", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    assert [(c["method"], c["step"]) for c in cells] == [("bilinear", None), ("learned", 5)]
    for cell in cells:
        folders = cell["per_folder"]
        assert {k: v["num_images"] for k, v in folders.items()} == {"one": 2, "two": 1}
        mean = sum(v["cosine"] * v["num_images"] for v in folders.values()) / 3
        assert cell["cosine"] == pytest.approx(mean, rel=1e-6)
        assert folders["one"]["cosine"] != pytest.approx(folders["two"]["cosine"], abs=1e-6)


def test_recorded_path_names_the_data_root_not_the_machine(tmp_path):
    lc = _script()
    data = tmp_path / "data"
    (data / "davis" / "480p").mkdir(parents=True)
    assert lc.recorded_path(data / "davis" / "480p", data) == "$DATA/davis/480p"
    assert lc.recorded_path(Path("val"), data) == "val"  # outside the root: as given
    assert lc.recorded_path(data / "davis", None) == str(data / "davis")


def test_learning_curve_needs_snapshots(tmp_path):
    with pytest.raises(SystemExit, match="--keep-every"):
        _script().main([str(tmp_path), "--set", f"x={tmp_path}:1", "--out", str(tmp_path / "o.json")])


def test_parse_set_names_the_flag():
    lc = _script()
    assert lc.parse_set("davis=/data/x:10") == ("davis", Path("/data/x"), 10)
    assert lc.parse_set("val=/data/v") == ("val", Path("/data/v"), 1)
    with pytest.raises(Exception, match="--set"):
        lc.parse_set("no-equals-sign")
