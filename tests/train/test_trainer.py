"""Training loop: losses fall on real photos, resume replays exactly, DDP ranks match accumulation."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wrcup.train.checkpoint import read_metadata
from wrcup.train.trainer import ImagePool, TrainConfig, batch_indices, lr_factor, train

# 112-pixel high-res views keep the real backbone cheap: 56-px low-res view = 4×4 tokens.
SMALL = dict(high_res=112, crop_align=28, crops=2, batch_size=2, progress=False, checkpoint_every=0)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, real_photos):
    folder = tmp_path_factory.mktemp("photos")
    for p in real_photos[:4]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")  # skipped, counted
    return folder


@pytest.fixture(scope="module")
def pool(photo_dir):
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        return ImagePool([str(photo_dir)])


def _params(path: Path) -> dict:
    return load_file(str(path))


def test_losses_fall_on_real_photos(tmp_path, pool, embedded_backbone, one_thread):
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), operator="wrc-reference", residual=True, steps=24,
                      lr=1e-3, schedule="constant", augment=True, **SMALL)
    summary = train(cfg, images=pool, backbone=embedded_backbone)
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < 0.9 * sum(losses[:6]) / 6, losses
    meta = read_metadata(tmp_path / "wrc.safetensors")
    assert meta["steps"] == 24 and meta["operator"] == "wrc-reference" and meta["residual"] is True
    assert meta["data"]["num_images"] == 4 and meta["data"]["skipped_unreadable"] == 1
    assert set(meta["final_losses"]) == {"total", "local", "global", "consistency", "full"}
    assert summary["steps"] == 24


def test_resume_equals_straight_run(tmp_path, pool, embedded_backbone, one_thread):
    common = dict(data=["unused"], operator="wrc-reference", steps=6, lr=1e-3, warmup=2, **SMALL)
    straight = TrainConfig(out=str(tmp_path / "straight"), **common)
    train(straight, images=pool, backbone=embedded_backbone)
    split = TrainConfig(out=str(tmp_path / "split"), **common)
    train(split, images=pool, backbone=embedded_backbone, stop_at=3)
    assert read_metadata(tmp_path / "split" / "last.safetensors")["steps"] == 3
    assert not (tmp_path / "split" / "wrc.safetensors").exists()  # not finished yet
    with (tmp_path / "split" / "log.csv").open("a") as fh:  # a run killed after the checkpoint logged step 4
        fh.write("4,9.9,9.9,0,0,0,1e-3,1.0,1.0\n")
    train(split, resume=True, images=pool, backbone=embedded_backbone)
    a, b = _params(tmp_path / "straight" / "wrc.safetensors"), _params(tmp_path / "split" / "wrc.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logs = [(tmp_path / d / "log.csv").read_text().splitlines() for d in ("straight", "split")]
    assert [r.split(",")[:5] for r in logs[0]] == [r.split(",")[:5] for r in logs[1]]


class _NoBackbone(torch.nn.Module):
    """Stands in for the backbone once every target is cached: any call fails the test."""

    def __init__(self, real):
        super().__init__()
        self.patch_size, self.dim, self.mean, self.std = real.patch_size, real.dim, real.mean, real.std
        self.normalise = real.normalise  # cheap: the guidance image is still normalised every step
        self.weights_identity = real.weights_identity  # the cache key: same weights, same entries

    def forward(self, images):
        raise AssertionError("the backbone ran although its targets were cached")


def test_cached_targets_with_full_view_loss(tmp_path, pool, embedded_backbone):
    common = dict(data=["unused"], operator="wrc-reference", residual=True, steps=3, cache_targets=str(tmp_path / "cache"),
                  loss_weights={"local": 1.0, "global": 0.0, "consistency": 1.0, "full": 1.0}, **SMALL)
    first = train(TrainConfig(out=str(tmp_path / "a"), **common), images=pool, backbone=embedded_backbone)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([n for n in cached if n.endswith(".full.safetensors")]) == len(pool)
    assert len(cached) == 2 * len(pool)
    second = train(TrainConfig(out=str(tmp_path / "b"), **common), images=pool, backbone=_NoBackbone(embedded_backbone))
    assert first["param_checksum"] == second["param_checksum"]
    assert second["final_losses"]["full"] > 0 and second["final_losses"]["global"] == 0


def test_target_cache_is_keyed_on_image_bytes_not_paths(tmp_path, photo_dir, embedded_backbone,
                                                        other_weights_backbone):
    """A copied folder (new paths, new mtimes) reuses the cache; an edited image or other weights do not."""
    from wrcup.train.trainer import TargetSource

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in sorted(photo_dir.iterdir()):
        shutil.copy(f, copy / f.name)  # shutil.copy: fresh mtimes
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), cache_targets=str(tmp_path / "cache"), **SMALL)

    def names(folder, backbone=embedded_backbone):
        with pytest.warns(RuntimeWarning, match="unreadable"):
            pool = ImagePool([str(folder)])
        source = TargetSource(pool, backbone, cfg, torch.device("cpu"))
        return [source._cache_file(i).name for i in range(len(pool))]

    original = names(photo_dir)
    assert len(set(original)) == len(original) == 4
    assert names(copy) == original
    edited = sorted(p for p in copy.iterdir() if p.name != "broken.jpg")[0]
    edited.write_bytes(edited.read_bytes() + b"\0")  # same picture, different bytes: must not be trusted
    changed = names(copy)
    assert changed[0] != original[0] and changed[1:] == original[1:]
    assert set(names(photo_dir, other_weights_backbone)).isdisjoint(original)



def test_resume_rejects_a_changed_config(tmp_path, pool, embedded_backbone, one_thread):
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), operator="transposed", steps=2, **SMALL)
    train(cfg, images=pool, backbone=embedded_backbone, stop_at=1)
    cfg.lr = 5e-3
    with pytest.raises(ValueError, match="lr"):
        train(cfg, resume=True, images=pool, backbone=embedded_backbone)


def test_batches_are_functions_of_seed_and_step():
    assert batch_indices(10, 4, 3, seed=0) == batch_indices(10, 4, 3, seed=0)
    epoch = [i for s in range(5) for i in batch_indices(10, 2, s, seed=1)]
    assert sorted(epoch) == list(range(10))  # one epoch visits every image once
    cfg = TrainConfig(data=["x"], out="y", steps=10, warmup=2)
    assert lr_factor(0, cfg) == 0.5 and lr_factor(1, cfg) == 1.0 and lr_factor(10, cfg) == pytest.approx(0.0)


def test_config_is_validated():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(data=["x"], out="y", schedule="linear").validate()
    with pytest.raises(ValueError, match="loss_weights"):
        TrainConfig(data=["x"], out="y", loss_weights={"perceptual": 1.0}).validate()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path, photo_dir):
    """2 gloo ranks × micro-batch 2 ≡ 1 process accumulating 2 micro-batches of 2 (same global batch 4).

    On CPU there is no SyncBatchNorm, so BatchNorm statistics are per micro-batch in both runs; parameters
    must agree. Every rank also saves its own final parameters: they must be identical (ranks in sync).
    """
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from wrcup.train.trainer import TrainConfig, train\n"
        "out, data, accum = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "rank = int(os.environ.get('RANK', '0'))\n"
        "cfg = TrainConfig(data=[data], out=out, operator='wrc-reference', steps=3, lr=1e-3, batch_size=4,\n"
        "                  grad_accum=accum, high_res=112, crop_align=28, crops=2, progress=False,\n"
        "                  checkpoint_every=0, name=f'rank{rank}')\n"
        "summary = train(cfg)\n"
        "print('CHECKSUM', rank, repr(summary['param_checksum']), flush=True)\n"
        "import torch.distributed as dist\n"
        "if dist.is_initialized():\n"
        "    dist.destroy_process_group()\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    port = _free_port()
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port),
                          str(script), str(tmp_path / "ddp"), str(photo_dir), "1"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), str(photo_dir), "2"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    ref = _params(tmp_path / "single" / "rank0.safetensors")
    got = _params(tmp_path / "ddp" / "rank0.safetensors")
    names = [k for k in ref if "running_" not in k and "num_batches" not in k]
    for k in names:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    # ranks in sync: each rank reports a float64 checksum of its own parameters; only rank 0 writes files
    sums = dict(line.split()[1:] for line in ddp.stdout.splitlines() if line.startswith("CHECKSUM"))
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"], ddp.stdout[-2000:]
    assert not (tmp_path / "ddp" / "rank1.safetensors").exists()
