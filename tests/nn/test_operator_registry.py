"""The operator registry is the one source of operator names: an operator registered by other code is built into
the network, trained by ``wrcup train``, saved and loaded back by ``wrcup.load``; an unregistered name is refused
with the registered ones listed."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wrcup
from wrcup.cli.main import main
from wrcup.models import UnguidedUpsampler, WRCUpsampler, build_upsampler
from wrcup.nn import UpsampleOperator, create_operator, list_operators, operator_entry, register_operator
from wrcup.nn import unregister_operator
from wrcup.models.checkpoint import load_checkpoint, read_metadata

TOY = "toy-nearest-gain"


class NearestGain(UpsampleOperator):
    """Nearest-neighbour upsampling times one learned gain per channel (a toy operator for these tests)."""

    def __init__(self, channels: int, scale: int = 2, init: float = 1.0):
        super().__init__()
        self.channels, self.scale = channels, scale
        self.gain = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") * self.gain


@pytest.fixture
def toy_operator():
    register_operator(TOY)(NearestGain)
    try:
        yield TOY
    finally:
        unregister_operator(TOY)
    assert TOY not in list_operators()


def test_registered_operator_is_built_into_the_network(toy_operator):
    entry = operator_entry(toy_operator)
    assert entry.factory is NearestGain and entry.guided and entry.summary.startswith("Nearest-neighbour")
    net = build_upsampler(toy_operator, 16, 14)
    assert isinstance(net, WRCUpsampler) and isinstance(net.operator, NearestGain)
    assert net.operator.gain.shape == (1, (16 + 32) // 2, 1, 1)  # the operator sees the feature path's width
    out = net(torch.randn(2, 3, 42, 28), torch.randn(2, 16, 3, 2))
    assert out.shape == (2, 16, 6, 4)
    assert create_operator(toy_operator, 3, init=2.0).gain.eq(2.0).all()  # per-operator options reach the factory


def test_registering_a_name_twice_or_a_bad_name_is_refused(toy_operator):
    with pytest.raises(ValueError, match="already registered"):
        register_operator(toy_operator)(NearestGain)
    for bad in ("", " padded", "a,b", 3):
        with pytest.raises(ValueError, match="operator name must be"):
            register_operator(bad)


def test_unregistered_name_lists_the_registered_ones():
    registered = list_operators()
    assert {"bilinear", "transposed", "wrc-reference", "wrc-aligned", "wrc-exact", "converse2d"} <= set(registered)
    for build in (lambda: build_upsampler("nope", 16, 14), lambda: WRCUpsampler(16, 14, operator="nope"),
                  lambda: create_operator("nope", 4), lambda: operator_entry("nope")):
        with pytest.raises(ValueError, match="registered operators") as err:
            build()
        assert all(repr(name) in str(err.value) for name in registered) and "'nope'" in str(err.value)


def test_guided_flag_selects_the_network():
    assert not operator_entry("bilinear").guided
    assert isinstance(build_upsampler("bilinear", 16, 14), UnguidedUpsampler)
    assert all(operator_entry(n).guided for n in list_operators() if n != "bilinear")
    # the registry's flag decides, not the name: an unguided toy operator gets the unguided upsampler
    register_operator("toy-unguided", guided=False)(NearestGain)
    try:
        net = build_upsampler("toy-unguided", 8, 14, init=3.0)
        feats = torch.randn(1, 8, 2, 3)
        torch.testing.assert_close(net(torch.randn(1, 3, 28, 42), feats),
                                   3.0 * feats.repeat_interleave(2, -1).repeat_interleave(2, -2))
        assert list(net.state_dict()) == ["operator.gain"]
    finally:
        unregister_operator("toy-unguided")


def test_registered_operator_trains_saves_and_loads(toy_operator, tmp_path, real_photos, embedded_backbone, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in real_photos[:2]:
        shutil.copy(p, photos / p.name)
    out = tmp_path / "run"
    flags = ["--data", str(photos), "--out", str(out), "--operator", toy_operator, "--steps", "2", "--lr", "1e-2",
             "--high-res", "112", "--crops", "2", "--batch-size", "2", "--checkpoint-every", "0", "--device", "cpu",
             "--name", "toy"]
    assert main(["train", *flags]) == 0  # the real entry point: --operator's choices come from the registry
    summary = json.loads(capsys.readouterr().out)
    path = out / "toy.safetensors"
    assert summary["finished"] and summary["checkpoint"] == str(path)
    assert read_metadata(path)["operator"] == toy_operator
    state, _ = load_checkpoint(path)
    assert not torch.equal(state["operator.gain"], torch.ones_like(state["operator.gain"]))  # it was trained

    model = wrcup.load(path, fold_bn=False)
    assert isinstance(model.upsampler.operator, NearestGain)
    loaded = model.upsampler.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    images = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        assert model(images).shape == (1, embedded_backbone.dim, 8, 8)

    # the same checkpoint without the operator registered (its module not imported): one clear error
    unregister_operator(toy_operator)
    try:
        with pytest.raises(ValueError, match=f"registered operators .*; got '{toy_operator}'"):
            wrcup.load(path)
    finally:
        register_operator(toy_operator)(NearestGain)
