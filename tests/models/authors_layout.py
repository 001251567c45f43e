"""The authors' state-dict layout written out by hand (test oracle, no code shared with wrcup.models)."""
from __future__ import annotations

import torch

from wrcup.models import WRCUpsampler

# Their module names (the facts stated in docs/DESIGN.md, "The authors' networks"), written out here by hand
# as an oracle independent of the module's table: (their module, ours) in the order of their state dict.
REFERENCE_BLOCKS = [
    ("up1.up", "operator"), ("up1.conv.0", "feature_path.0"), ("up1.conv.1", "feature_path.1"),
    ("up1.conv_1.0", "fuse"), ("outc", "head"), ("in_conv.0", "image_branch.stem.0"),
    ("in_conv.1", "image_branch.stem.1"),
    *[(f"image_convs_1.{i}", f"image_branch.quarter.{i}") for i in range(4)],
    *[(f"image_convs_2.{i}", f"image_branch.coarse.{i}") for i in range(2)],
]


def reference_layout(C: int, G: int = 32) -> list[tuple[str, tuple]]:
    """The authors' (name, shape) entries, in their order, for the 2× network on C channels."""
    M = (C + G) // 2
    out = [("up1.up.weight", (1, M, 2, 2)), ("up1.up.bias", (1, M, 1, 1)),
           ("up1.up.w_conv_low.weight", (M, M, 3, 3)), ("up1.up.w_conv_high.weight", (M, M, 3, 3))]

    def bn(name, n):
        out.extend([(f"{name}.weight", (n,)), (f"{name}.bias", (n,)), (f"{name}.running_mean", (n,)),
                    (f"{name}.running_var", (n,)), (f"{name}.num_batches_tracked", ())])

    def bottleneck(name, i, o, downsample):
        for k, (a, b, size) in enumerate([(i, i, 1), (i, i, 3), (i, o, 1)], start=1):
            out.append((f"{name}.conv{k}.weight", (b, a, size, size)))
            bn(f"{name}.bn{k}", b)
        if downsample:
            out.append((f"{name}.downsample.0.weight", (o, i, 1, 1)))
            bn(f"{name}.downsample.1", o)

    bottleneck("up1.conv.0", C + G, M, True)
    bottleneck("up1.conv.1", M, M, False)
    bottleneck("up1.conv_1.0", M + G, C // 2, True)
    out += [("outc.weight", (C, C // 2, 1, 1)), ("outc.bias", (C,)), ("in_conv.0.weight", (G, 3, 1, 1))]
    bn("in_conv.1", G)
    for i in range(4):
        bottleneck(f"image_convs_1.{i}", G, G, i % 2 == 0)
    for i in range(2):
        bottleneck(f"image_convs_2.{i}", G, G, i == 0)
    return out


def _ours(their_name: str) -> str:
    for theirs, ours in REFERENCE_BLOCKS:
        if their_name.startswith(theirs + "."):
            return ours + their_name[len(theirs):].replace(".downsample.", ".shortcut.")
    raise AssertionError(their_name)


def randomised(model: WRCUpsampler, seed: int) -> WRCUpsampler:
    """Every entry distinguishable (BN statistics too), eval mode so the statistics are used."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            t.fill_(int(torch.randint(1, 1000, (), generator=g)))
        elif name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def authors_state_dict(model: WRCUpsampler, C: int) -> dict:
    """``model``'s tensors under the authors' names and in their order (built with the oracle above)."""
    state = model.state_dict()
    out = {}
    for name, shape in reference_layout(C):
        out[name] = state[_ours(name)].clone()
        assert tuple(out[name].shape) == shape, name
    assert len(out) == len(state)
    return out
