"""Fixtures shared by the evaluation tests."""
import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded, untrained residual WRC upsampler for the embedded backbone, saved as a checkpoint file."""
    from wrcup.models.checkpoint import save_checkpoint
    from wrcup.models.upsampler import build_upsampler

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_upsampler("wrc-reference", 384, 14, residual=True).state_dict(),
                    {"backbone": "dinov2-s14-imgfocus", "dim": 384, "patch_size": 14, "operator": "wrc-reference",
                     "residual": True, "steps": 0})
    return path
