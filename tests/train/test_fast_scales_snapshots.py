"""The fast training step, training on several grid scales, the target-cache key, and --keep-every snapshots."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wrcup.cli.main import main
from wrcup.models.checkpoint import read_metadata
from wrcup.train.trainer import (LOSS_NAMES, TargetSource, TrainConfig, batch_indices, build_model,
                                 build_optimizer, lr_factor, scale_index, train, train_step)

# 112-pixel high-res views keep the real backbone cheap (56-px low-res view = 4×4 tokens); 168 is the second scale.
SMALL = dict(crop_align=28, crops=2, batch_size=2, progress=False, checkpoint_every=0)
TWO_SCALES = dict(high_res=[112, 168], scale_mix=[1.0, 1.0], seed=3)


def test_fast_step_computes_the_same_losses_and_gradients(tmp_path, pool, embedded_backbone):
    """One step of the fast and of the original path from the same weights on the same batch: equal up to
    rounding (the fast WRC layer factors its high-res convolution, AdamW is fused)."""
    results = []
    for fast in (False, True):
        cfg = TrainConfig(data=["unused"], out=str(tmp_path), operator="wrc-reference", residual=True, high_res=112,
                          lr=1e-3, fast=fast, **SMALL)
        torch.manual_seed(0)
        model = build_model(cfg, embedded_backbone, torch.device("cpu")).train()
        assert model.operator.prior_conv == ("factored" if fast else "direct")
        optimizer = build_optimizer(cfg, model)
        assert optimizer.defaults["fused"] is (True if fast else None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        source = TargetSource(pool, embedded_backbone, cfg, torch.device("cpu"))
        idx = batch_indices(len(pool), cfg.batch_size, 0, cfg.seed)
        parts = train_step(model, embedded_backbone, source, optimizer, scheduler, cfg, 0, idx, 0, cfg.batch_size)
        results.append((parts, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (parts_old, grads_old), (parts_fast, grads_fast) = results
    assert parts_old[LOSS_NAMES.index("local")] > 0 and parts_old[LOSS_NAMES.index("consistency")] > 0
    torch.testing.assert_close(parts_fast, parts_old, rtol=1e-4, atol=1e-6)
    for name, g in grads_old.items():
        scale = float(g.abs().max())
        torch.testing.assert_close(grads_fast[name], g, rtol=1e-3, atol=1e-3 * scale + 1e-9, msg=name)


def test_scale_of_a_step_is_drawn_from_seed_step_and_mix():
    single = TrainConfig(data=["x"], out="y", high_res=448)
    assert {scale_index(s, single) for s in range(50)} == {0}
    mix = TrainConfig(data=["x"], out="y", high_res=[448, 896], scale_mix=[3, 1], seed=0)
    draws = [scale_index(s, mix) for s in range(800)]
    assert draws == [scale_index(s, mix) for s in range(800)]  # pure function of (seed, step)
    assert 0.20 < sum(draws) / len(draws) < 0.30  # 896 on about a quarter of the steps
    other_seed = TrainConfig(data=["x"], out="y", high_res=[448, 896], scale_mix=[3, 1], seed=1)
    assert draws != [scale_index(s, other_seed) for s in range(800)]


@pytest.mark.parametrize("kwargs,match", [
    (dict(high_res=[448, 447]), "even"),
    (dict(high_res=[448, 448]), "twice"),
    (dict(high_res=[448, 896], scale_mix=[1.0]), "scale_mix"),
    (dict(high_res=[448, 896], scale_mix=[1.0, 0.0]), "scale_mix"),
    (dict(keep_every=-1), "keep_every"),
])
def test_scale_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(data=["x"], out="y", **kwargs).validate()


def test_cache_key_is_unchanged_for_each_scale(tmp_path, pool, embedded_backbone):
    """Entries of a cache filled by a one-scale run (key format v2) are found by a run on several scales."""
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), cache_targets=str(tmp_path / "cache"), **SMALL, **TWO_SCALES)
    weights_id = embedded_backbone.weights_identity()
    for size in cfg.scales():
        source = TargetSource(pool, embedded_backbone, cfg, torch.device("cpu"), high_res=size)
        for i, path in enumerate(pool.paths):
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            key = f"v2|{digest}|{cfg.backbone}|{weights_id}|{size}|{cfg.crops}|{cfg.crop_align}|{cfg.seed}"
            name = hashlib.sha1(key.encode()).hexdigest()[:20]
            assert source._cache_file(i) == tmp_path / "cache" / f"{name}.safetensors"
            assert source._full_file(i) == tmp_path / "cache" / f"{name}.full.safetensors"


def test_two_scale_run_resumes_exactly(tmp_path, pool, embedded_backbone):
    common = dict(data=["unused"], operator="wrc-reference", residual=True, steps=6, lr=1e-3, warmup=2,
                  cache_targets=str(tmp_path / "cache"), **SMALL, **TWO_SCALES)
    drawn = {scale_index(s, TrainConfig(out="", **common)) for s in range(6)}
    assert drawn == {0, 1}, "the seed must put both scales into the six steps"
    straight = train(TrainConfig(out=str(tmp_path / "straight"), **common), images=pool, backbone=embedded_backbone)
    # one cache entry per image and scale (no full-view loss here)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2 * len(pool)
    split = TrainConfig(out=str(tmp_path / "split"), **common)
    train(split, images=pool, backbone=embedded_backbone, stop_at=3)
    resumed = train(split, resume=True, images=pool, backbone=embedded_backbone)
    assert resumed["param_checksum"] == straight["param_checksum"]
    a = load_file(str(tmp_path / "straight" / "wrc.safetensors"))
    b = load_file(str(tmp_path / "split" / "wrc.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_metadata(tmp_path / "split" / "wrc.safetensors")["config"]["high_res"] == [112, 168]


def test_keep_every_writes_weight_snapshots(tmp_path, pool, embedded_backbone):
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), operator="transposed", high_res=112, steps=4, keep_every=2,
                      **SMALL)
    train(cfg, images=pool, backbone=embedded_backbone)
    snaps = sorted(p.name for p in tmp_path.glob("step-*"))
    assert snaps == ["step-000002.json", "step-000002.safetensors", "step-000004.json", "step-000004.safetensors"]
    assert [read_metadata(tmp_path / f"step-00000{s}.safetensors")["steps"] for s in (2, 4)] == [2, 4]
    assert read_metadata(tmp_path / "step-000004.safetensors")["finished"] is True
    final, last = load_file(str(tmp_path / "wrc.safetensors")), load_file(str(tmp_path / "step-000004.safetensors"))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    middle = load_file(str(tmp_path / "step-000002.safetensors"))
    assert any(not torch.equal(middle[k], final[k]) for k in final)  # a real snapshot, not the final weights


def test_cli_scale_flags(tmp_path, pool, capsys):
    base = ["train", "--data", str(Path(pool.paths[0]).parent), "--out", str(tmp_path), "--steps", "1"]
    assert main(base + ["--high-res", "112,168", "--scale-mix", "112:3"]) == 2
    assert "--scale-mix gives no weight" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--high-res", "112,big"])
    with pytest.raises(SystemExit):
        main(base + ["--scale-mix", "112=3"])


def test_overlapped_passes_match_sequential_passes(tmp_path, pool, embedded_backbone):
    """The two passes in two threads of one intra-op thread each compute, bit for bit, the losses and gradients
    of the two passes one after the other on one thread (over 2 micro-batches); BatchNorm running statistics
    are merged afterwards, equal up to rounding."""
    cfg = TrainConfig(data=["unused"], out=str(tmp_path), operator="wrc-reference", residual=True, high_res=112,
                      lr=1e-3, grad_accum=2, batch_size=4, **{k: v for k, v in SMALL.items() if k != "batch_size"})
    old = torch.get_num_threads()
    runs = []
    try:
        for overlap, threads in ((False, 1), (True, 2)):  # overlapped: two passes × one thread
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            model = build_model(cfg, embedded_backbone, torch.device("cpu")).train()
            optimizer = build_optimizer(cfg, model)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
            source = TargetSource(pool, embedded_backbone, cfg, torch.device("cpu"))
            idx = batch_indices(len(pool), cfg.batch_size, 0, cfg.seed)
            parts = train_step(model, embedded_backbone, source, optimizer, scheduler, cfg, 0, idx, 0, 2, overlap=overlap)
            runs.append((parts, {n: p.grad.clone() for n, p in model.named_parameters()},
                         {n: b.clone() for n, b in model.named_buffers()}))
    finally:
        torch.set_num_threads(old)
    (parts_seq, grads_seq, bufs_seq), (parts_ovl, grads_ovl, bufs_ovl) = runs
    assert parts_seq[LOSS_NAMES.index("consistency")] > 0
    assert torch.equal(parts_ovl, parts_seq)
    assert all(torch.equal(grads_ovl[n], grads_seq[n]) for n in grads_seq)
    for name, b in bufs_seq.items():  # running statistics after 2 micro-batches × 2 passes; counters exact
        torch.testing.assert_close(bufs_ovl[name], b, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("precision", ["auto", "bfloat16"])  # bfloat16: autocast inside the overlapped workers
def test_overlapped_run_resumes_exactly(tmp_path, pool, embedded_backbone, precision):
    common = dict(data=["unused"], operator="wrc-reference", residual=True, high_res=112, steps=4, lr=1e-3,
                  precision=precision, **SMALL)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        straight = train(TrainConfig(out=str(tmp_path / "straight"), **common), images=pool, backbone=embedded_backbone)
        split = TrainConfig(out=str(tmp_path / "split"), **common)
        train(split, images=pool, backbone=embedded_backbone, stop_at=2)
        resumed = train(split, resume=True, images=pool, backbone=embedded_backbone)
    finally:
        torch.set_num_threads(old)
    assert resumed["param_checksum"] == straight["param_checksum"]
    a = load_file(str(tmp_path / "straight" / "wrc.safetensors"))
    b = load_file(str(tmp_path / "split" / "wrc.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metadata(tmp_path / "split" / "wrc.safetensors")["config"]["precision"] == precision
