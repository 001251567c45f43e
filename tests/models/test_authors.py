"""wrcup.models.authors + ``wrcup convert authors``: the authors' files read without running their pickles,
converted, served by wrcup.load; refusals and errors."""
from __future__ import annotations

import builtins
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import wrcup
from wrcup._io import file_sha256
from wrcup.cli.main import main
from wrcup.data.images import load_image
from wrcup.models import WRCUpsampler
from wrcup.models.authors import (
    AuthorsCheckpointError,
    UnsafePickleError,
    convert_authors_checkpoint,
    plain_data,
    read_authors_checkpoint,
    read_torch_file,
)

from authors_layout import authors_state_dict, randomised

DATA = Path(__file__).parent / "data"


class StandInConfig:
    """Plays the part of their OmegaConf object: a class that only this test module defines."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class RunsCode:
    """Pickles as a call of ``func(*args)``: loading it with plain pickle runs the call."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture(scope="module")
def source() -> WRCUpsampler:
    return randomised(WRCUpsampler(384, 14), seed=11)


@pytest.fixture(scope="module")
def theirs(source) -> dict:
    return authors_state_dict(source, 384)


@pytest.fixture(scope="module")
def training_file(tmp_path_factory, source, theirs) -> Path:
    """A file in the layout of their training checkpoints."""
    optimiser = torch.optim.AdamW([source.head.weight.detach().clone().requires_grad_()], lr=1e-3)
    optimiser.param_groups[0]["params"][0].grad = torch.ones(384, 192, 1, 1)
    optimiser.step()
    cfg = StandInConfig(model=StandInConfig(dim=384, patch=14), lr=1e-4, crops=[224, 448], name="run", out=None)
    path = tmp_path_factory.mktemp("authors") / "model_1000steps.pth"
    torch.save({"wrc": theirs, "optimizer_wrc": optimiser.state_dict(), "epoch": 3, "cfg": cfg}, path)
    return path


def _photo(real_photos, size=(56, 70)) -> torch.Tensor:
    image = load_image(real_photos[0])[None]
    return torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ (a)
def test_convert_their_training_checkpoint_and_load_it(training_file, source, theirs, real_photos, tmp_path,
                                                       capsys, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the converter must not call torch.load")

    monkeypatch.setattr(torch, "load", forbidden)
    out = tmp_path / "authors.safetensors"
    assert main(["convert", "authors", str(training_file), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.with_suffix(".json").is_file()
    monkeypatch.undo()

    model = wrcup.load(out, fold_bn=False)
    meta = model.metadata
    assert (meta["backbone"], meta["dim"], meta["patch_size"]) == ("dinov2-s14-imgfocus", 384, 14)
    assert meta["operator"] == "wrc-reference" and meta["residual"] is False
    src = meta["source"]
    assert src["file"] == "model_1000steps.pth" and src["sha256"] == file_sha256(training_file)
    assert src["epoch"] == 3 and src["state_dict_entry"] == "wrc"
    cfg = src["cfg"]
    assert cfg["__class__"].endswith(".StandInConfig") and cfg["model"]["__class__"].endswith(".StandInConfig")
    assert {k: v for k, v in cfg.items() if k != "__class__" and k != "model"} == \
        {"lr": 1e-4, "crops": [224, 448], "name": "run", "out": None}
    assert {k: v for k, v in cfg["model"].items() if k != "__class__"} == {"dim": 384, "patch": 14}

    direct = WRCUpsampler(384, 14)
    direct.load_state_dict(theirs, strict=True)
    direct.eval()
    images = _photo(real_photos)
    with torch.no_grad():
        low = model.backbone(images)
        guide = model.backbone.normalise(model.backbone.prepare(images))
        expected = source(guide, low)  # the tensors under our names, mapped by the hand-written oracle
        assert torch.equal(direct(guide, low), expected)
        assert torch.equal(model(images), expected)
        served = wrcup.load(out)(images)  # the default: BatchNorms folded into the convolutions
    assert (served - expected).norm() / expected.norm() < 1e-5


def test_real_omegaconf_config_reads_as_plain_data():
    """A file holding an OmegaConf 2.3.0 DictConfig (made with ``torch.save({"epoch": 7, "cfg": OmegaConf.create(
    {...})}, path)``; omegaconf is not installed here, so its classes stay placeholders)."""
    obj = read_torch_file(DATA / "omegaconf-2.3.0-cfg.pth")
    assert obj["epoch"] == 7
    assert plain_data(obj["cfg"]) == {
        "model": {"name": "dinov2_vits14", "dim": 384, "patch_size": 14},
        "train": {"lr": 1e-4, "steps": 100000, "crops": [224, 448], "resume": None},
        "seed": 0, "out": "???", "log_lr": "${train.lr}"}


def test_reader_returns_what_torch_load_returns(tmp_path):
    base = torch.arange(24, dtype=torch.float64).view(4, 6)
    obj = {
        "views": [base, base[1:, 2:], base.t(), base[:, ::2]],  # one storage, offsets and strides
        "dtypes": {str(d): torch.arange(5).to(d) for d in (torch.float16, torch.bfloat16, torch.int64, torch.int8,
                                                             torch.uint8, torch.bool, torch.float32)},
        "scalar": torch.tensor(7), "empty": torch.zeros(0, 3), "param": torch.nn.Parameter(torch.ones(2)),
        "ordered": OrderedDict(a=1, b=(2.5, "x")), "size": torch.Size([2, 3]), "dtype": torch.float32,
        "set": {1, 2}, "none": None,
    }
    path = tmp_path / "mixed.pth"
    torch.save(obj, path)
    got, want = read_torch_file(path), torch.load(path, weights_only=True)
    assert set(got) == set(want)
    for a, b in zip(got["views"], want["views"]):
        assert torch.equal(a, b) and a.stride() == b.stride()
    for k in want["dtypes"]:
        assert got["dtypes"][k].dtype == want["dtypes"][k].dtype and torch.equal(got["dtypes"][k], want["dtypes"][k])
    for k in ("scalar", "empty", "param"):
        assert type(got[k]) is torch.Tensor and torch.equal(got[k], want[k])
    assert got["ordered"] == want["ordered"] and isinstance(got["ordered"], OrderedDict)
    assert got["size"] == want["size"] and got["dtype"] is torch.float32 and got["set"] == {1, 2}


# ------------------------------------------------------------------------------------------------ (b)
@pytest.mark.parametrize("where", ["top", "cfg", "state_dict"])
@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_pickle_that_would_run_code_is_refused(tmp_path, theirs, capsys, where, kind):
    marker = tmp_path / "marker"
    if kind == "os.system":
        evil, named = RunsCode(os.system, f"touch {marker}"), r"(posix|os|nt)\.system"
    else:
        evil, named = RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"), r"builtins\.exec"
    small = {"outc.bias": theirs["outc.bias"]}
    payload = {"top": {"wrc": small, "epoch": 3, "hook": evil},
               "cfg": {"wrc": small, "epoch": 3, "cfg": StandInConfig(lr=1.0, callback=evil)},
               "state_dict": {"state_dict": {**small, "outc.weight": evil}}}[where]
    path = tmp_path / "evil.pth"
    torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=rf"evil\.pth: its pickle calls {named}, .*refused"):
        read_authors_checkpoint(path)
    assert main(["convert", "authors", str(path), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------------------------------ (c)
@pytest.mark.parametrize("layout", ["module.wrc.", "wrc.", "module.", "state_dict", "bare"])
def test_prefixes_and_containers_their_evaluation_accepts(tmp_path, source, theirs, layout):
    if layout == "state_dict":
        obj, entry = {"state_dict": theirs, "epoch": 9}, "state_dict"
    elif layout == "bare":
        obj, entry = theirs, "bare"
    else:
        obj, entry = {"wrc": {layout + k: v for k, v in theirs.items()}, "epoch": 5}, "wrc"
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    state, meta = convert_authors_checkpoint(path)
    assert meta["source"]["state_dict_entry"] == entry
    assert meta["source"]["epoch"] == (5 if entry == "wrc" else None) and meta["source"]["cfg"] is None
    assert state.keys() == source.state_dict().keys()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in state.items())


def _converted_error(tmp_path, obj, **kwargs) -> str:
    path = tmp_path / "bad.pth"
    torch.save(obj, path)
    with pytest.raises(ValueError) as info:
        convert_authors_checkpoint(path, **kwargs)
    return str(info.value)


def test_missing_unexpected_and_misshaped_entries_are_named(tmp_path, theirs, capsys):
    missing = {k: v for k, v in theirs.items() if k != "image_convs_1.3.bn2.running_mean"}
    assert "missing the key 'image_convs_1.3.bn2.running_mean'" in _converted_error(tmp_path, {"wrc": missing})
    extra = {**theirs, "up1.pre.weight": torch.zeros(3)}
    assert "unexpected key 'up1.pre.weight'" in _converted_error(tmp_path, {"wrc": extra})
    wrong = {**theirs, "up1.conv.1.conv2.weight": torch.zeros(208, 208, 1, 1)}
    message = _converted_error(tmp_path, {"wrc": wrong})
    assert "'up1.conv.1.conv2.weight'] has shape (208, 208, 1, 1)" in message and "expects (208, 208, 3, 3)" in message
    # at the command line: one line naming the key
    assert main(["convert", "authors", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "up1.conv.1.conv2.weight" in err


def test_channel_count_must_match_the_backbone(tmp_path):
    small = authors_state_dict(randomised(WRCUpsampler(16, 14), seed=1), 16)
    message = _converted_error(tmp_path, {"wrc": small})
    assert "16 channels" in message and "has 384" in message
    message = _converted_error(tmp_path, {"wrc": small}, backbone="dinov2-b14")
    assert "has 768" in message


def test_files_that_are_not_their_checkpoints_get_clear_errors(tmp_path, theirs, capsys):
    assert "is not a state dict: 'epoch' holds int" in _converted_error(tmp_path, {"epoch": 3, "cfg": None})
    assert "holds list" in _converted_error(tmp_path, [1, 2])
    assert "no 1-d 'outc.bias'" in _converted_error(tmp_path, {"wrc": {"x.weight": torch.zeros(2)}})
    legacy = tmp_path / "legacy.pth"
    torch.save({"outc.bias": theirs["outc.bias"]}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(AuthorsCheckpointError, match="legacy format"):
        read_torch_file(legacy)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(AuthorsCheckpointError, match="not a torch.save file"):
        read_torch_file(junk)
    with pytest.raises(FileNotFoundError):
        read_torch_file(tmp_path / "absent.pth")
    assert main(["convert", "authors", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert main(["convert", "authors", str(legacy), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "--out must name a .safetensors file" in err
