"""Pinned numbers of two small fixed evaluations on real DAVIS frames (the embedded backbone and a seeded, untrained
WRC upsampler), recorded on the code before the task runners were restructured: a refactor of the evaluation
code must reproduce them. Recorded on an x86-64 CPU in float32; the tolerance only absorbs other BLAS kernels."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from wrcup.eval import tasks
from wrcup.eval.extract import FeatureExtractor

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-dev"
FRAMES = DAVIS / "JPEGImages" / "480p" / "blackswan"

RECORDED = {
    ("fidelity", "bilinear"): {"cosine": 0.548854261636734, "mse": 3.7033392190933228, "nmse": 0.7479288280010223,
                               "nmse_global": 0.7613043785095215},
    ("fidelity", "learned"): {"cosine": 0.5428778678178787, "mse": 3.747948408126831, "nmse": 0.7573503255844116,
                              "nmse_global": 0.7705428004264832},
    ("davis", "bilinear"): {"J-Mean": 73.35614658234427, "F-Mean": 50.499985190216165,
                            "J&F-Mean": 61.928065886280216},
    ("davis", "learned"): {"J-Mean": 73.38316542086449, "F-Mean": 50.49545545854052, "J&F-Mean": 61.9393104397025},
}


@pytest.fixture(scope="module")
def blackswan_root(tmp_path_factory):
    """A DAVIS-layout root holding the first three frames of blackswan."""
    if not FRAMES.is_dir():
        pytest.skip(f"real DAVIS frames not found at {FRAMES} (../shared/data is absent)")
    root = tmp_path_factory.mktemp("davis")
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        (root / kind / "480p" / "blackswan").mkdir(parents=True)
        for t in range(3):
            shutil.copy(DAVIS / kind / "480p" / "blackswan" / f"{t:05d}.{ext}",
                        root / kind / "480p" / "blackswan" / f"{t:05d}.{ext}")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("blackswan\n")
    return root


@pytest.fixture(scope="module")
def tiny_upsampler():
    from wrcup.models.upsampler import build_upsampler

    torch.manual_seed(0)
    return build_upsampler("wrc-reference", 384, 14, residual=True).eval()


@pytest.mark.parametrize("method", ["bilinear", "learned"])
def test_fidelity_and_davis_reproduce_recorded_numbers(embedded_backbone, blackswan_root, tiny_upsampler, method):
    extractor = FeatureExtractor(embedded_backbone, tiny_upsampler if method == "learned" else None, method)
    frames = sorted((blackswan_root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:2]
    fidelity = tasks.run_task("fidelity", extractor, image_paths=frames, size=56, progress=False)
    assert fidelity["num_images"] == 2 and fidelity["input_size"] == 56 and fidelity["target_size"] == 112
    for key, value in RECORDED[("fidelity", method)].items():
        assert fidelity[key] == pytest.approx(value, rel=1e-5, abs=0), key
    davis = tasks.run_task("davis", extractor, root=blackswan_root, size=112, progress=False)
    assert davis["num_objects"] == 1 and list(davis["per_sequence"]) == ["blackswan"]
    for key, value in RECORDED[("davis", method)].items():
        assert davis[key] == pytest.approx(value, rel=1e-5, abs=0), key
