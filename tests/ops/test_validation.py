"""Bad input to wrcup.ops raises a clear ValueError/TypeError naming the argument."""
from __future__ import annotations

import pytest
import torch

from wrcup.ops import converse2d, reverse_conv, weighted_reverse_conv, wrc_closed_form

pytestmark = pytest.mark.usefixtures("one_thread")

C = 3


def _params(C=C, k=2):
    return (
        torch.rand(1, C, k, k),
        torch.zeros(1, C, 1, 1),
        torch.randn(C, C, 3, 3) * 0.1,
        torch.randn(C, C, 3, 3) * 0.1,
    )


def _layer(x=None, kernel=None, bias=None, conv_low=None, conv_high=None, **kw):
    p = _params()
    x = torch.randn(2, C, 5, 6) if x is None else x
    return weighted_reverse_conv(
        x, p[0] if kernel is None else kernel, p[1] if bias is None else bias,
        p[2] if conv_low is None else conv_low, p[3] if conv_high is None else conv_high, **kw,
    )


def test_valid_call_works():
    assert _layer().shape == (2, C, 10, 12)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"x": torch.randn(C, 5, 6)}, ValueError, r"^x must have 4 dimensions"),
        ({"x": torch.randn(2, C, 5, 6).tolist()}, TypeError, r"^x must be a torch.Tensor"),
        ({"x": torch.ones(2, C, 5, 6, dtype=torch.int64)}, TypeError, r"^x must be a floating tensor"),
        ({"x": torch.randn(2, C + 1, 5, 6)}, ValueError, r"^kernel must have 4 channels"),
        ({"kernel": torch.rand(1, C + 1, 2, 2)}, ValueError, r"^kernel must have 3 channels"),
        ({"kernel": torch.rand(2, C, 2, 2)}, ValueError, r"^kernel must have shape"),
        ({"kernel": torch.rand(2, 2)}, ValueError, r"^kernel must have 3 or 4 dimensions"),
        ({"kernel": torch.rand(1, C, 0, 2)}, ValueError, r"^kernel size must be >= 1"),
        ({"kernel": torch.rand(1, C, 40, 40), "padding": 1}, ValueError, r"^kernel of size \(40, 40\) is larger than the high-res padded grid"),
        ({"bias": torch.zeros(1, C + 1, 1, 1)}, ValueError, r"^bias must hold one value per channel \(3\)"),
        ({"conv_low": torch.randn(C + 1, C, 3, 3)}, ValueError, r"^weight_conv_low must have shape \(3, 3, k, k\)"),
        ({"conv_high": torch.randn(C, C + 1, 3, 3)}, ValueError, r"^weight_conv_high must have shape \(3, 3, k, k\)"),
        ({"conv_high": torch.randn(C, C, 2, 2)}, ValueError, r"^weight_conv_high must have an odd square"),
        ({"conv_low": torch.randn(C, C, 3)}, ValueError, r"^weight_conv_low must have 4 dimensions"),
        ({"scale": 0}, ValueError, r"^scale must be >= 1"),
        ({"scale": 2.0}, TypeError, r"^scale must be an int"),
        ({"padding": -1}, ValueError, r"^padding must be >= 0"),
        ({"padding": 5, "padding_mode": "reflect"}, ValueError, r"^padding must be < the input size 5 for padding_mode='reflect'"),
        ({"padding": 6, "padding_mode": "circular"}, ValueError, r"^padding must be <= the input size 5"),
        ({"padding_mode": "wrap"}, ValueError, r"^padding_mode must be one of"),
        ({"mode": "fast"}, ValueError, r"^mode must be one of 'reference', 'aligned', 'exact'"),
    ],
)
def test_layer_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _layer(**kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_layer_rejects_non_finite_x(bad):
    x = torch.randn(2, C, 5, 6)
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf"):
        _layer(x=x)


def test_padding_limits_that_are_fine():
    assert _layer(padding=4, padding_mode="reflect").shape == (2, C, 10, 12)
    assert _layer(padding=5, padding_mode="circular").shape == (2, C, 10, 12)
    assert _layer(padding=7, padding_mode="replicate").shape == (2, C, 10, 12)
    assert _layer(padding=7, padding_mode="zeros").shape == (2, C, 10, 12)


def test_converse2d_layer_rejects():
    k, b, _, _ = _params()
    with pytest.raises(ValueError, match=r"^x contains NaN"):
        converse2d(torch.full((1, C, 4, 4), float("nan")), k, b)
    with pytest.raises(ValueError, match=r"^kernel must have 3 channels"):
        converse2d(torch.randn(1, C, 4, 4), torch.rand(C + 1, 2, 2), b)
    with pytest.raises(ValueError, match=r"^bias must hold one value per channel"):
        converse2d(torch.randn(1, C, 4, 4), k, torch.zeros(C + 2))
    with pytest.raises(ValueError, match=r"^padding_mode must be one of"):
        converse2d(torch.randn(1, C, 4, 4), k, b, padding_mode="mirror")


def test_closed_form_rejects():
    y = torch.randn(2, C, 4, 5)
    k = torch.rand(C, 2, 2)
    wl, wh = torch.rand(2, C, 4, 5), torch.rand(2, C, 8, 10)
    with pytest.raises(ValueError, match=r"^mode must be one of 'reference', 'aligned'"):
        wrc_closed_form(y, k, 0.1, wl, wh, 2, mode="exact")
    with pytest.raises(ValueError, match=r"^y must have 4 dimensions"):
        wrc_closed_form(y[0], k, 0.1, wl, wh, 2)
    with pytest.raises(ValueError, match=r"^weight_low must be broadcastable to \(2, 3, 4, 5\)"):
        wrc_closed_form(y, k, 0.1, wl[..., :4], wh, 2)
    with pytest.raises(ValueError, match=r"^weight_high must be broadcastable to \(2, 3, 12, 15\), got \(2, 3, 8, 10\)"):
        wrc_closed_form(y, k, 0.1, wl, wh, 3)
    with pytest.raises(ValueError, match=r"^prior must have shape \(2, 3, 8, 10\)"):
        wrc_closed_form(y, k, 0.1, wl, wh, 2, prior=torch.randn(2, C, 8, 8))
    with pytest.raises(ValueError, match=r"^lam must be broadcastable to \(2, 3, 1, 1\)"):
        reverse_conv(y, k, torch.ones(4), 2)
    with pytest.raises(ValueError, match=r"^lam must be > 0"):
        reverse_conv(y, k, torch.tensor([0.1, 0.0, 0.2]).reshape(1, C, 1, 1), 2)
    with pytest.raises(ValueError, match=r"^lam must be > 0"):
        wrc_closed_form(y, k, -1.0, wl, wh, 2)
    with pytest.raises(ValueError, match=r"^scale must be >= 1"):
        reverse_conv(y, k, 0.1, 0)
    with pytest.raises(ValueError, match=r"^kernel must have 3 channels"):
        reverse_conv(y, torch.rand(C - 1, 2, 2), 0.1, 2)
    with pytest.raises(ValueError, match=r"^kernel of size \(9, 9\) is larger than the high-res grid \(8, 10\)"):
        reverse_conv(y, torch.rand(C, 9, 9), 0.1, 2)
