"""wrcup.models.upsampler: size of the reference network, shapes, guidance geometry, multi-pass, errors, gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wrcup.models import UnguidedUpsampler, Bottleneck, StackedUpsampler, WRCUpsampler, build_upsampler, upsample

from authors_layout import authors_state_dict, randomised, reference_layout

NETWORK_OPS = ["wrc-reference", "wrc-aligned", "wrc-exact", "converse2d", "transposed"]
ALL_OPS = NETWORK_OPS + ["bilinear"]


def inputs(p, h=2, w=3, dim=16, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, p * h, p * w, generator=g), torch.randn(batch, dim, h, w, generator=g)


# ----------------------------------------------------------------------------------------- reference size
def expected_parameter_count(C: int, G: int = 32) -> int:
    """Hand transcription of the authors' layout (wrcup.models.upsampler docstring) with bottleneck mid width = input width (no code shared with the module)."""
    def bottleneck(i, o, stride):
        mid = i
        n = i * mid + 9 * mid * mid + mid * o + 2 * (mid + mid + o)  # three convs + three BN affine pairs
        if stride != 1 or i != o:
            n += i * o + 2 * o
        return n

    M = (C + G) // 2
    image = 3 * G + 2 * G + sum(bottleneck(G, G, s) for s in (2, 1, 2, 1, 2, 1))
    wrc = 4 * M + M + 2 * 9 * M * M  # weight (1,M,2,2), bias (1,M,1,1), w_conv_low/high (M,M,3,3)
    features = bottleneck(C + G, M, 1) + bottleneck(M, M, 1) + wrc + bottleneck(M + G, C // 2, 1) + (C // 2) * C + C
    return image + features


def test_hand_count_reproduces_the_reference_number():
    assert expected_parameter_count(384) == 3_979_216


def test_reference_network_has_3979216_parameters_in_204_entries():
    model = WRCUpsampler(384, 14, operator="wrc-reference")
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 3_979_216
    assert len(state) == 204
    bn_buffers = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(bn_buffers) == 3 * 33  # BatchNorms: stem 1, image blocks 6×3 + 3 shortcuts, feature side 3×3 + 2
    assert tuple(state["operator.weight"].shape) == (1, 208, 2, 2)
    assert tuple(state["operator.w_conv_high.weight"].shape) == (208, 208, 3, 3)
    assert tuple(state["head.weight"].shape) == (384, 192, 1, 1) and tuple(state["head.bias"].shape) == (384,)


def test_bottleneck_mid_width_is_input_width_and_shortcut_only_on_shape_change():
    b = Bottleneck(40, 24, stride=2)
    assert tuple(b.conv1.weight.shape) == (40, 40, 1, 1) and tuple(b.conv2.weight.shape) == (40, 40, 3, 3)
    assert tuple(b.conv3.weight.shape) == (24, 40, 1, 1) and b.shortcut is not None
    assert Bottleneck(24, 24, stride=1).shortcut is None
    assert all(m.bias is None for m in b.modules() if isinstance(m, torch.nn.Conv2d))
    assert tuple(b(torch.randn(1, 40, 7, 9)).shape) == (1, 24, 4, 5)


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("patch", [8, 14, 16])
@pytest.mark.parametrize("op", ALL_OPS)
def test_output_shape_every_operator_and_patch(op, patch):
    torch.manual_seed(0)
    model = build_upsampler(op, 16, patch)
    image, feats = inputs(patch, h=2, w=3)
    out = model(image, feats)
    assert tuple(out.shape) == (2, 16, 4, 6)
    assert out.dtype == feats.dtype and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("patch", [4, 7, 8, 10, 14, 16, 20])
def test_guidance_lands_on_2x_and_1x_the_grid(patch):
    branch = WRCUpsampler(8, patch, operator="transposed").image_branch
    image, _ = inputs(patch, h=3, w=5, dim=8, batch=1)
    g1, g2 = branch(image, (3, 5), patch)
    assert tuple(g1.shape) == (1, 32, 6, 10) and tuple(g2.shape) == (1, 32, 3, 5)


def test_guidance_resampling_rule():
    """p = 8: the quarter map IS g1; p = 16: 2×2 max-pool of it; p = 14: max-pool of its bilinear resize to 4×."""
    branch = WRCUpsampler(8, 8, operator="transposed").image_branch.eval()
    h, w = 3, 4
    for p in (8, 16, 14):
        image = torch.randn(1, 3, p * h, p * w)
        q = branch.quarter_map(image)
        g1, _ = branch.guidance(q, (h, w), p)
        if p == 8:
            expect = q
        elif p == 16:
            expect = F.max_pool2d(q, 2)
        else:
            expect = F.max_pool2d(F.interpolate(q, size=(4 * h, 4 * w), mode="bilinear", align_corners=False), 2)
        assert tuple(q.shape[-2:]) == ((p * h + 3) // 4, (p * w + 3) // 4)
        torch.testing.assert_close(g1, expect, rtol=0, atol=0)


def test_eval_mode_samples_are_independent():
    torch.manual_seed(1)
    model = build_upsampler("transposed", 16, 14).eval()
    image, feats = inputs(14, h=2, w=3)
    with torch.no_grad():
        both = model(image, feats)
        one = model(image[1:], feats[1:])
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- residual
@pytest.mark.parametrize("op", ["transposed", "wrc-reference"])
def test_residual_adds_bilinear_upsampling_of_the_features(op):
    torch.manual_seed(2)
    plain = build_upsampler(op, 16, 14).eval()
    resid = build_upsampler(op, 16, 14, residual=True).eval()
    assert sum(p.numel() for p in resid.parameters()) == sum(p.numel() for p in plain.parameters())
    resid.load_state_dict(plain.state_dict())
    image, feats = inputs(14, h=2, w=2, batch=1)
    # oracle for bilinear 2× with align_corners=False on a 2×2 map: each output pixel mixes the nearest input
    # pixel (weight 3/4 per axis) with its neighbour (1/4), edges clamped.
    a = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    bilinear = torch.einsum("ia,jb,cab->cij", a, a, feats[0].double())
    with torch.no_grad():
        diff = (resid(image, feats) - plain(image, feats))[0].double()
    torch.testing.assert_close(diff, bilinear, rtol=1e-5, atol=1e-5)


def test_bilinear_baseline_has_no_parameters_and_no_residual():
    model = build_upsampler("bilinear", 16, 14)
    assert isinstance(model, UnguidedUpsampler) and len(model.state_dict()) == 0
    image, feats = inputs(14)
    torch.testing.assert_close(model(image, feats), F.interpolate(feats, scale_factor=2, mode="bilinear"))
    with pytest.raises(ValueError, match="residual"):
        build_upsampler("bilinear", 16, 14, residual=True)


# ----------------------------------------------------------------------------------------- multi-pass 4×
@pytest.mark.parametrize("patch", [8, 14, 16])
def test_stacked_4x_shapes_shared_and_separate(patch):
    torch.manual_seed(3)
    a, b = build_upsampler("transposed", 16, patch), build_upsampler("transposed", 16, patch)
    image, feats = inputs(patch, h=2, w=3)
    for passes in ([a, a], [a, b], [a, build_upsampler("bilinear", 16, patch)]):
        out = StackedUpsampler(passes)(image, feats)
        assert tuple(out.shape) == (2, 16, 8, 12)
    assert StackedUpsampler([a, a]).scale == 4


def test_stacked_second_pass_sees_the_image_at_half_the_patch_size():
    torch.manual_seed(4)
    a, b = build_upsampler("transposed", 16, 14).eval(), build_upsampler("transposed", 16, 14).eval()
    image, feats = inputs(14, h=2, w=3)
    with torch.no_grad():
        stacked = upsample(image, feats, [a, b])
        by_hand = b(image, a(image, feats), patch_size=7)
        single = upsample(image, feats, [a])
        direct = a(image, feats)
    torch.testing.assert_close(stacked, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(single, direct, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not match image size"):
        b(image, a(image, feats))  # without the override the 2× grid does not match patch 14


def test_shared_image_branch_runs_once_per_image():
    model = build_upsampler("transposed", 16, 14)
    calls = []
    model.image_branch.quarter.register_forward_hook(lambda *args: calls.append(1))
    image, feats = inputs(14)
    upsample(image, feats, [model, model])
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    model = build_upsampler("transposed", 16, 14)
    image, feats = inputs(14, h=2, w=3)
    with pytest.raises(ValueError, match="features must have 4 dimensions"):
        model(image, feats[0])
    with pytest.raises(ValueError, match="image must have 4 dimensions"):
        model(image[0], feats)
    with pytest.raises(ValueError, match="features must have dim=16 channels"):
        model(image, feats[:, :8])
    with pytest.raises(ValueError, match="image must have 3 channels"):
        model(image[:, :1], feats)
    with pytest.raises(ValueError, match="same batch size"):
        model(image[:1], feats)
    with pytest.raises(ValueError, match="grid 2×3 does not match image size 28×56"):
        model(torch.randn(2, 3, 28, 56), feats)
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        model(image.numpy(), feats)
    with pytest.raises(TypeError, match="features must be a floating tensor"):
        model(image, feats.long())
    with pytest.raises(ValueError, match="operator must be one of"):
        build_upsampler("nearest", 16, 14)
    with pytest.raises(ValueError, match="dim must be even"):
        WRCUpsampler(15, 14, operator="transposed")
    with pytest.raises(TypeError, match="patch_size must be an int"):
        WRCUpsampler(16, 14.0, operator="transposed")
    with pytest.raises(ValueError, match="passes must contain"):
        StackedUpsampler([])
    with pytest.raises(ValueError, match="passes\\[1\\] has dim=8"):
        upsample(image, feats, [model, build_upsampler("transposed", 8, 14)])


@pytest.mark.parametrize("op", ALL_OPS)
def test_min_grid_is_the_smallest_grid_the_operator_runs_on(op):
    model = build_upsampler(op, 16, 14)
    m = model.min_grid
    assert m == (2 if op in ("wrc-reference", "wrc-aligned", "wrc-exact", "converse2d") else 1)  # circular pad 2
    image, feats = inputs(14, h=m, w=m)
    assert tuple(model(image, feats).shape[-2:]) == (2 * m, 2 * m)
    if m > 1:
        image, feats = inputs(14, h=m - 1, w=m + 2)
        with pytest.raises(ValueError, match=f"grid {m - 1}×{m + 2} is too small: .* at least {m} tokens per side"):
            model(image, feats)
        with pytest.raises(ValueError, match=f"grid {m - 1}×{m + 2} is too small"):  # stacked passes check it too
            upsample(image, feats, [model, model])
        # the floor is the operator's own: unchecked, it fails on that grid too
        with pytest.raises(ValueError, match="padding must be <="):
            model.operator(torch.randn(1, model.operator.channels, m - 1, m + 2))


# -------------------------------------------------------------------------------------------- gradients
def test_gradient_reaches_every_parameter():
    op = "wrc-reference"
    torch.manual_seed(5)
    model = build_upsampler(op, 16, 14)
    image, feats = inputs(14, h=3, w=3)
    feats.requires_grad_(True)
    target = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(6))
    F.mse_loss(model(image, feats), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, name
    assert feats.grad is not None and feats.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ the authors' state dicts
def test_reference_layout_oracle_has_the_reference_size():
    layout = reference_layout(384)
    assert len(layout) == 204 and len({n for n, _ in layout}) == 204
    assert sum(torch.Size(s).numel() for n, s in layout
               if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 3_979_216


def test_authors_state_dict_in_any_order_loads_to_the_same_network():
    """The authors' entries, in their order and shuffled, load by NAME: same tensors, same outputs."""
    C = 384
    source = randomised(WRCUpsampler(C, 14), seed=1)
    theirs = authors_state_dict(source, C)
    perm = torch.randperm(len(theirs), generator=torch.Generator().manual_seed(2)).tolist()
    names = list(theirs)
    shuffled = {names[i]: theirs[names[i]] for i in perm}
    image, feats = inputs(14, h=2, w=2, dim=C, batch=1)
    with torch.no_grad():
        expected = source(image, feats)
    for state in (theirs, shuffled):
        target = WRCUpsampler(C, 14)
        target.load_reference_state_dict(state)
        for k, v in target.state_dict().items():
            assert torch.equal(v, source.state_dict()[k]), k
        with torch.no_grad():
            assert torch.equal(target.eval()(image, feats), expected)


@pytest.mark.parametrize("C,op", [(384, "wrc-reference"), (16, "wrc-reference"), (16, "transposed")])
def test_reference_state_dict_has_the_authors_names_shapes_and_order(C, op):
    model = build_upsampler(op, C, 14)
    got = [(k, tuple(v.shape)) for k, v in model.reference_state_dict().items()]
    expected = reference_layout(C)
    if op == "transposed":  # its operator's own entries differ; the rest of the network is named the same
        expected = [(n, s) for n, s in expected if not n.startswith("up1.up.")]
        got = [(n, s) for n, s in got if not n.startswith("up1.up.")]
    assert got == expected


def test_load_state_dict_accepts_the_authors_names_strictly():
    C = 16
    source = randomised(WRCUpsampler(C, 14), seed=3)
    shuffled = dict(reversed(list(authors_state_dict(source, C).items())))
    target = WRCUpsampler(C, 14)
    result = target.load_state_dict(shuffled, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in target.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    # inside another module (prefixed keys): the renaming follows the prefix
    stacked = StackedUpsampler([WRCUpsampler(C, 14), WRCUpsampler(C, 14)])
    stacked.load_state_dict({f"passes.{i}.{k}": v for i in range(2) for k, v in shuffled.items()}, strict=True)
    assert torch.equal(stacked.passes[1].head.weight, source.head.weight)
    # our own names still load, and the map sends every entry back to itself
    back = WRCUpsampler(C, 14)
    back.load_state_dict(source.state_dict(), strict=True)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in back.state_dict().items())


def test_load_reference_state_dict_names_the_offending_key():
    C = 16
    source = randomised(WRCUpsampler(C, 14), seed=4)
    theirs = authors_state_dict(source, C)
    target = WRCUpsampler(C, 14)
    missing = {k: v for k, v in theirs.items() if k != "image_convs_2.1.bn3.running_var"}
    with pytest.raises(ValueError, match=r"missing the key 'image_convs_2\.1\.bn3\.running_var'"):
        target.load_reference_state_dict(missing)
    with pytest.raises(ValueError, match=r"missing the key 'head\.bias'"):
        target.load_reference_state_dict({k: v for k, v in source.state_dict().items() if k != "head.bias"})
    with pytest.raises(ValueError, match=r"unexpected key 'up1\.pre\.weight'"):
        target.load_reference_state_dict({**theirs, "up1.pre.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"'outc\.weight'\] has shape \(16, 4, 1, 1\), this upsampler expects "
                                         r"\(16, 8, 1, 1\)"):
        target.load_reference_state_dict({**theirs, "outc.weight": torch.zeros(16, 4, 1, 1)})
    with pytest.raises(ValueError, match=r"'head\.weight' twice"):
        target.load_reference_state_dict({**theirs, "head.weight": theirs["outc.weight"]})
    # strict=False skips unknown and missing entries but still checks shapes
    result = target.load_reference_state_dict({"outc.bias": theirs["outc.bias"], "extra": torch.zeros(1)}, strict=False)
    assert "head.weight" in result.missing_keys and torch.equal(target.head.bias, source.head.bias)
