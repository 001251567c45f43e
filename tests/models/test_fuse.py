"""BatchNorm folding keeps the network's outputs and removes every BatchNorm."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from network_helpers import as_after_training

from wrcup.models import build_upsampler, fold_batchnorm


@pytest.mark.parametrize("operator", ["wrc-reference", "transposed"])
def test_folded_network_gives_the_same_features(operator):
    torch.manual_seed(0)
    net = build_upsampler(operator, 32, 14, residual=True)
    as_after_training(net)  # non-trivial BatchNorm statistics and affine parameters
    net = net.double().eval()  # fold in float64 so the comparison is not limited by float32 rounding
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    image, feats = torch.randn(2, 3, 56, 84, dtype=torch.float64), torch.randn(2, 32, 4, 6, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(folded(image, feats), net(image, feats), rtol=1e-10, atol=1e-10)
