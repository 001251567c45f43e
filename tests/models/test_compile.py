"""torch.compile(fullgraph=True) of the upsampler network: no graph breaks, so no host-device synchronisation.

A value check (NaN/Inf, ``.item()``, ``if tensor.any()``) inside the forward pass breaks the graph, and fullgraph=True
turns every break into an error; so these tests guard the rule that such checks run only at the public boundary.
``wrc-exact`` is excluded: its PCG solver stops on a convergence test, a data-dependent loop (see
:func:`wrcup.ops.wrc_exact_solve`).

Most tests trace with the "eager" backend (dynamo only, seconds); one runs the default inductor backend on the WRC
layer alone, which keeps its C++ compilation small.
"""
from __future__ import annotations

import pytest
import torch

from wrcup.models import StackedUpsampler, build_upsampler, fold_batchnorm
from wrcup.nn import create_operator, list_operators

pytestmark = pytest.mark.usefixtures("one_thread")

COMPILABLE = [name for name in list_operators() if name != "wrc-exact"]


def _inputs(dim=8, grid=(3, 4), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, 14 * grid[0], 14 * grid[1], generator=g)
    features = torch.randn(batch, dim, *grid, generator=g)
    return image, features


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("operator", COMPILABLE)
def test_operator_traces_as_one_graph(operator):
    torch.manual_seed(0)
    op = create_operator(operator, 4).eval()
    x = torch.randn(2, 4, 5, 6)
    with torch.no_grad():
        got = torch.compile(op, fullgraph=True, backend="eager")(x)
        torch.testing.assert_close(got, op(x), rtol=1e-5, atol=1e-6)


def test_upsampler_traces_as_one_graph():
    """The network around an operator (every operator shares this code), then two stacked passes of the served
    layout (BatchNorm folded)."""
    torch.manual_seed(0)
    up = build_upsampler("wrc-reference", 8, 14).eval()
    image, features = _inputs()
    with torch.no_grad():
        got = torch.compile(up, fullgraph=True, backend="eager")(image, features)
        torch.testing.assert_close(got, up(image, features), rtol=1e-5, atol=1e-6)
        folded = fold_batchnorm(up)
        stacked = StackedUpsampler([folded, folded]).eval()
        torch._dynamo.reset()
        got = torch.compile(stacked, fullgraph=True, backend="eager")(image, features)
        torch.testing.assert_close(got, stacked(image, features), rtol=1e-5, atol=1e-6)
        folded.output_norm = "bilinear"  # the rescaling to the bilinear lengths is in the graph too
        torch._dynamo.reset()
        got = torch.compile(stacked, fullgraph=True, backend="eager")(image, features)
        torch.testing.assert_close(got, stacked(image, features), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_step_traces_as_one_graph():
    """Forward and backward (AOT autograd, through the hand-written backward of the closed form), float64."""
    torch.manual_seed(0)
    up = build_upsampler("wrc-reference", 8, 14).train().double()
    image, features = (t.double() for t in _inputs())
    compiled = torch.compile(up, fullgraph=True, backend="aot_eager")
    compiled(image, features).square().mean().backward()
    got = [p.grad.clone() for p in up.parameters()]
    up.zero_grad()
    up(image, features).square().mean().backward()
    for g, p in zip(got, up.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-9, atol=1e-12)


def test_exact_mode_is_not_one_graph():
    """The documented exclusion: PCG's convergence test is data-dependent."""
    up = create_operator("wrc-exact", 4).eval()
    with pytest.raises(Exception, match="(?i)data.dependent|graph break|Unsupported"):
        torch.compile(up, fullgraph=True, backend="eager")(torch.randn(1, 4, 4, 4))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex:UserWarning")
def test_wrc_layer_compiles_with_inductor():
    torch.manual_seed(0)
    layer = create_operator("wrc-reference", 4).eval()
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        got = torch.compile(layer, fullgraph=True)(x)
        torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-6)
