"""Training loop: losses fall on real photos, resume replays exactly (after --stop-at, a signal, or from the
CLI with only the run folder), DDP ranks match accumulation."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wrcup.cli.main import main
from wrcup.train import trainer
from wrcup.models.checkpoint import read_metadata
from wrcup.train.trainer import ImagePool, TrainConfig, TrainingInterrupted, batch_indices, lr_factor, train

# 112-pixel high-res views keep the real backbone cheap: 56-px low-res view = 4×4 tokens.
SMALL = dict(high_res=112, crop_align=28, crops=2, batch_size=2, progress=False, checkpoint_every=0)
# the run every stopped-and-resumed run below must reproduce bit for bit
RESUMABLE = dict(data=["unused"], operator="wrc-reference", steps=6, lr=1e-3, warmup=2, **SMALL)


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


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, pool, embedded_backbone) -> Path:
    """RESUMABLE run straight through (one thread, as every test here)."""
    out = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(out=str(out), **RESUMABLE), images=pool, backbone=embedded_backbone)
    finally:
        torch.set_num_threads(threads)
    return out


def _assert_same_run(reference: Path, run: Path) -> None:
    """Final parameters bit-identical, and the same losses logged for every step."""
    a, b = _params(reference / "wrc.safetensors"), _params(run / "wrc.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logs = [(d / "log.csv").read_text().splitlines() for d in (reference, run)]
    assert [r.split(",")[:5] for r in logs[0]] == [r.split(",")[:5] for r in logs[1]]


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


def test_resume_equals_straight_run(tmp_path, pool, embedded_backbone, straight_run):
    split = TrainConfig(out=str(tmp_path / "split"), **RESUMABLE)
    train(split, images=pool, backbone=embedded_backbone, stop_at=3)
    assert read_metadata(tmp_path / "split" / "last.safetensors")["steps"] == 3
    assert not (tmp_path / "split" / "wrc.safetensors").exists()  # not finished yet
    with (tmp_path / "split" / "log.csv").open("a") as fh:  # a run killed after the checkpoint logged step 4
        fh.write("4,9.9,9.9,0,0,0,1e-3,1.0,1.0\n")
    train(split, resume=True, images=pool, backbone=embedded_backbone)
    _assert_same_run(straight_run, tmp_path / "split")


def test_ema_follows_a_float64_average_of_the_snapshots_and_resumes_exactly(tmp_path, pool, embedded_backbone,
                                                                             one_thread):
    decay = 0.75  # not 0.5, where the average is symmetric in old and new weights
    cfg = dict(RESUMABLE, ema=decay, keep_every=1)
    straight = tmp_path / "straight"
    train(TrainConfig(out=str(straight), **cfg), images=pool, backbone=embedded_backbone)
    # oracle: e_1 = w_1, e_t = decay·e_(t-1) + (1 − decay)·w_t over the raw weights after each step
    average = None
    for step in range(1, RESUMABLE["steps"] + 1):
        raw = {k: v.double() for k, v in _params(straight / f"step-{step:06d}.safetensors").items()}
        average = raw if average is None else {k: decay * average[k] + (1 - decay) * raw[k] for k in raw}
        got = _params(straight / f"step-{step:06d}.ema.safetensors")
        assert got.keys() == raw.keys()
        for k, v in got.items():
            if not k.endswith("num_batches_tracked"):  # an integer counter, unused with BatchNorm's momentum
                torch.testing.assert_close(v.double(), average[k], rtol=1e-6, atol=1e-6, msg=k)
    # the average is not the last weights (else the comparison above would prove nothing)
    assert max(float((average[k] - raw[k]).abs().max()) for k in raw if raw[k].is_floating_point()) > 1e-4
    final = _params(straight / "wrc.ema.safetensors")
    assert all(torch.equal(final[k], v) for k, v in got.items())
    assert read_metadata(straight / "wrc.ema.safetensors")["ema"] == {"decay": decay, "updates": 6}

    split = tmp_path / "split"
    train(TrainConfig(out=str(split), **cfg), images=pool, backbone=embedded_backbone, stop_at=3)
    train(TrainConfig(out=str(split), **cfg), resume=True, images=pool, backbone=embedded_backbone)
    _assert_same_run(straight, split)
    resumed = _params(split / "wrc.ema.safetensors")
    assert resumed.keys() == final.keys() and all(torch.equal(resumed[k], final[k]) for k in final)


def test_ema_switched_on_at_resume_leaves_the_weights_and_starts_there(tmp_path, pool, embedded_backbone,
                                                                       straight_run):
    run = tmp_path / "run"
    train(TrainConfig(out=str(run), **RESUMABLE), images=pool, backbone=embedded_backbone, stop_at=3)
    train(TrainConfig(out=str(run), ema=0.9, **RESUMABLE), resume=True, images=pool, backbone=embedded_backbone)
    _assert_same_run(straight_run, run)  # the trained weights do not depend on the average
    assert read_metadata(run / "wrc.ema.safetensors")["ema"] == {"decay": 0.9, "updates": 3}


def test_ema_out_of_range_is_refused(tmp_path):
    for bad in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="ema must be a decay in"):
            TrainConfig(out=str(tmp_path), ema=bad, **RESUMABLE).validate()


def _signal_after_step(monkeypatch, step: int, *signums) -> None:
    """Send ``signums`` to this process from inside optimiser step ``step`` (1-based; the schedule is evaluated
    for the next step right after it), as Ctrl-C or a scheduler's SIGTERM would arrive mid-run."""
    real, sent = trainer.lr_factor, []

    def hooked(s, cfg):
        if s == step and not sent:
            sent.append(s)
            for signum in signums:
                # without train()'s handler the signal would end pytest itself
                assert signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler), signum
                os.kill(os.getpid(), signum)
        return real(s, cfg)

    monkeypatch.setattr(trainer, "lr_factor", hooked)


def test_a_signal_mid_run_checkpoints_that_step_and_resume_equals_straight_run(tmp_path, pool, embedded_backbone,
                                                                                straight_run, monkeypatch):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _signal_after_step(monkeypatch, 3, signal.SIGTERM, signal.SIGTERM)  # a repeated signal changes nothing
    real_save = trainer.save_checkpoint

    def save_while_signalled(*args, **kwargs):  # a signal during the write: the write completes first
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save_while_signalled)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train(TrainConfig(out=str(run), **RESUMABLE), images=pool, backbone=embedded_backbone)
    monkeypatch.undo()
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # train() is a library function
    stopped = info.value
    assert (stopped.signum, stopped.exit_code, stopped.step) == (signal.SIGTERM, 143, 3)
    assert str(run / "last.safetensors") in str(stopped) and f"wrcup train --resume {run}" in str(stopped)
    assert read_metadata(run / "last.safetensors")["steps"] == 3
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["steps"], summary["finished"], summary["stopped_by"]) == (3, False, "SIGTERM")
    assert summary["checkpoint"] == str(run / "last.safetensors")
    train(TrainConfig(out=str(run), **RESUMABLE), resume=True, images=pool, backbone=embedded_backbone)
    _assert_same_run(straight_run, run)


@pytest.mark.filterwarnings("ignore:.*skipped 1 unreadable:RuntimeWarning")
def test_cli_ctrl_c_then_resume_with_only_the_run_folder(tmp_path, photo_dir, embedded_backbone, monkeypatch, capsys):
    # the reference is a CLI run too: train() seeds the initialisation before it loads the backbone, so a run that
    # loads its own backbone starts elsewhere than one given a loaded backbone (the tests above)
    flags = ["--data", str(photo_dir), "--operator", "transposed", "--steps", "3", "--lr", "1e-3", "--warmup", "2",
             "--high-res", "112", "--crops", "2", "--batch-size", "2", "--checkpoint-every", "0", "--device", "cpu"]
    assert main(["train", *flags, "--out", str(tmp_path / "straight")]) == 0
    run = tmp_path / "run"
    _signal_after_step(monkeypatch, 1, signal.SIGINT)
    assert main(["train", *flags, "--out", str(run)]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "step 1 of 3" in last and str(run / "last.safetensors") in last and f"wrcup train --resume {run}" in last
    recorded = read_metadata(run / "last.safetensors")["config"]
    assert main(["train", "--resume", str(run)]) == 0
    _assert_same_run(tmp_path / "straight", run)
    assert read_metadata(run / "wrc.safetensors")["config"] == recorded  # the run's settings, not the defaults


@pytest.mark.filterwarnings("ignore:.*skipped 1 unreadable:RuntimeWarning")
def test_resume_refuses_a_differing_flag_and_keeps_the_recorded_config(tmp_path, photo_dir, embedded_backbone, capsys):
    run = tmp_path / "run"
    flags = ["--data", str(photo_dir), "--operator", "transposed", "--steps", "2", "--high-res", "112",
             "--crops", "1", "--batch-size", "2", "--checkpoint-every", "0"]
    assert main(["train", *flags, "--out", str(run), "--stop-at", "1"]) == 0
    recorded = read_metadata(run / "last.safetensors")["config"]
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--high-res", "224"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "--high-res 224" in err and "112" in err and str(run) in err
    assert main(["train", "--resume", str(run), "--losses", "local,global"]) == 2
    assert "local,global" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--precision", "bfloat16"]) == 2  # other rounding: another run
    assert "--precision bfloat16" in capsys.readouterr().err
    assert read_metadata(run / "last.safetensors")["config"] == recorded
    # the older spelling (--out RUN --resume) still works; where it runs and how often it saves may change
    assert main(["train", "--out", str(run), "--resume", "--device", "cpu", "--checkpoint-every", "5", *flags[2:4]]) == 0
    final = read_metadata(run / "wrc.safetensors")
    assert final["steps"] == 2 and final["config"]["high_res"] == 112
    assert final["config"] == {**recorded, "checkpoint_every": 5}


def test_resume_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2  # no checkpoint there
    assert str(tmp_path / "last.safetensors") in capsys.readouterr().err
    (tmp_path / "last.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # cut short
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and str(tmp_path / "last.safetensors") in err and err.count("\n") == 1
    assert main(["train", "--out", str(tmp_path / "a"), "--resume", str(tmp_path / "b")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", "--resume"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "new")]) == 2  # a new run needs its images
    assert "--data" in capsys.readouterr().err


def test_ctrl_c_before_the_first_step_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(folders):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "ImagePool", interrupted)  # Ctrl-C while the images are listed
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint" in err


def test_every_train_flag_is_a_setting_or_per_invocation():
    """Resume compares the flags a user typed with the recorded settings: each flag must map to one."""
    from wrcup.cli import main as cli
    from dataclasses import fields

    args = cli.build_parser().parse_args(["train", "--resume", "x"])
    names = {f.name for f in fields(TrainConfig)}
    for dest in set(vars(args)) - {"command", "func"}:
        assert dest in cli.PER_INVOCATION_FLAGS or cli.TRAIN_FLAG_FIELDS.get(dest, dest) in names, dest


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



def test_stop_at_summary_names_the_checkpoint_that_exists_and_resume_rejects_a_changed_setting(tmp_path, pool,
                                                                                                embedded_backbone,
                                                                                                photo_dir):
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), operator="transposed", steps=2, **SMALL)
    summary = train(cfg, images=pool, backbone=embedded_backbone, stop_at=1)
    assert (summary["finished"], summary["stopped_by"], summary["steps"]) == (False, "stop_at", 1)
    assert summary["checkpoint"] == str(tmp_path / "last.safetensors")  # the named one does not exist yet
    assert read_metadata(summary["checkpoint"])["steps"] == 1
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    changed = TrainConfig(**{**cfg.__dict__, "lr": 5e-3})
    with pytest.raises(ValueError, match="lr=0.005 differs from the recorded 0.0002"):
        train(changed, resume=True, images=pool, backbone=embedded_backbone)
    (tmp_path / "fewer").mkdir()
    shutil.copy(min(p for p in photo_dir.iterdir() if p.name != "broken.jpg"), tmp_path / "fewer")
    with pytest.raises(ValueError, match="hold 1 readable images.*trained on 4"):  # other images: other batches
        train(cfg, resume=True, images=ImagePool([str(tmp_path / "fewer")]), backbone=embedded_backbone)
    summary = train(cfg, resume=True, images=pool, backbone=embedded_backbone)
    assert (summary["finished"], summary["stopped_by"], summary["steps"]) == (True, None, 2)
    assert summary["checkpoint"] == str(tmp_path / "wrc.safetensors")
    assert read_metadata(summary["checkpoint"])["finished"] is True


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
