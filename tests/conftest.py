"""Shared fixtures: real photos from ../shared/data, the embedded backbone converted once per session."""
from __future__ import annotations

import os

# Before torch loads MKL: on Intel CPUs MKL picks its code path by each array's alignment unless told to be strict,
# so two runs of the same arithmetic may differ in the last bits (seen: the overlapped training passes against the
# sequential ones, ~1e-7 relative, tests/train/test_fast_scales_snapshots.py). The tests that claim bit-for-bit
# equality need the strict mode; AMD CPUs behaved so already. docs/RELIABILITY.md has the same note for users.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMAGENET = SHARED / "data" / "imagenet-sample"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session converts the embedded backbone into its own cache unless WRCUP_CACHE is set."""
    if "WRCUP_CACHE" not in os.environ:
        os.environ["WRCUP_CACHE"] = str(tmp_path_factory.mktemp("wrcup-cache"))
    yield


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    """A handful of real ImageNet photos (the shared data), or the examples shipped in the repository."""
    photos = sorted(IMAGENET.glob("*.JPEG"))[:6] if IMAGENET.is_dir() else []
    if not photos:
        photos = sorted((REPO / "examples").glob("*.jpg"))
    assert photos, "no real photos found (neither ../shared/data/imagenet-sample nor examples/)"
    return photos


@pytest.fixture(scope="session")
def embedded_backbone():
    from wrcup import backbones

    return backbones.load("dinov2-s14-imgfocus")


@pytest.fixture(scope="session")
def other_weights_backbone(embedded_backbone, tmp_path_factory):
    """The embedded architecture loaded from a local file holding slightly different weights (norm bias + 0.01)."""
    from safetensors.torch import save_file

    from wrcup import backbones

    state = {k: v.clone() for k, v in embedded_backbone.model.state_dict().items()}
    state["norm.bias"] += 0.01
    path = tmp_path_factory.mktemp("other-weights") / "other-weights.safetensors"
    save_file(state, str(path))
    return backbones.load(embedded_backbone.name, weights=path)


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use one thread: the tensors are small, and on a busy 2-core machine OpenMP spin-waiting
    made tiny ops take seconds with two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# Devices the operator tests run on: the CPU always, a CUDA GPU too when one is present (same oracles, same
# tolerances; the float64 oracles themselves run on the CPU).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """The device an operator test runs on: "cpu", and "cuda" when ``torch.cuda.is_available()``."""
    return torch.device(request.param)
