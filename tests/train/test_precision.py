"""Training under bfloat16 autocast (``precision="bfloat16"``): the convolutions run in bfloat16, the step stays
close to the float32 one, and its overlapped passes equal its sequential ones. (A resumed bfloat16 run replays
exactly: tests/train/test_fast_scales_snapshots.py.)"""
from __future__ import annotations


import pytest
import torch

from wrcup.train.step import uses_bf16_autocast
from wrcup.train.trainer import (LOSS_NAMES, TargetSource, TrainConfig, batch_indices, build_model,
                                 build_optimizer, lr_factor, train_step)

# 112-pixel high-res views keep the real backbone cheap (56-px low-res view = 4×4 tokens)
SMALL = dict(data=["unused"], operator="wrc-aligned", residual=True, high_res=112, crop_align=28, crops=2,
             lr=1e-3, progress=False, checkpoint_every=0)


def _one_step(cfg, pool, backbone, threads: int, overlap: bool, step: int = 0):
    """Loss terms, gradients and the dtypes the convolutions produced in one step from seed-0 weights."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    seen = set()
    try:
        torch.manual_seed(0)
        model = build_model(cfg, backbone, torch.device("cpu")).train()
        hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
                 for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        optimizer = build_optimizer(cfg, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        source = TargetSource(pool, backbone, cfg, torch.device("cpu"))
        idx = batch_indices(len(pool), cfg.batch_size, step, cfg.seed)
        micro = cfg.batch_size // cfg.grad_accum
        parts = train_step(model, backbone, source, optimizer, scheduler, cfg, step, idx, 0, micro, overlap=overlap)
        for h in hooks:
            h.remove()
    finally:
        torch.set_num_threads(old)
    return parts, {n: p.grad.clone() for n, p in model.named_parameters()}, seen


def test_precision_setting_is_checked_and_auto_means_cuda_only():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(out="x", precision="float16", **SMALL).validate()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto, bf16, fp32 = (TrainConfig(out="x", precision=p, **SMALL) for p in ("auto", "bfloat16", "float32"))
    assert (uses_bf16_autocast(auto, cpu), uses_bf16_autocast(auto, cuda)) == (False, True)
    assert uses_bf16_autocast(bf16, cpu) and uses_bf16_autocast(bf16, cuda)
    assert not uses_bf16_autocast(fp32, cpu) and not uses_bf16_autocast(fp32, cuda)


def test_bf16_step_runs_convolutions_in_bf16_and_follows_the_float32_step(tmp_path, pool, embedded_backbone):
    """Same weights, same batch: the bfloat16 step's convolutions output bfloat16 (the float32 step's float32), its
    losses agree with the float32 step's to bfloat16's precision, and its rounding noise is small against the
    sampling noise: its gradient is far closer to the float32 gradient of the same batch (cosine ≈ 0.88 here)
    than float32 gradients of two different batches are to each other (≈ 0.0–0.2)."""
    runs = {}
    for precision, step in (("float32", 0), ("bfloat16", 0), ("float32", 1)):
        cfg = TrainConfig(out=str(tmp_path), precision=precision, batch_size=2, **SMALL)
        runs[precision, step] = _one_step(cfg, pool, embedded_backbone, threads=1, overlap=False, step=step)
    (p32, g32, seen32), (p16, g16, seen16) = runs["float32", 0], runs["bfloat16", 0]
    assert seen32 == {torch.float32} and seen16 == {torch.bfloat16}
    assert all(g.dtype == torch.float32 for g in g16.values())  # parameters and their gradients stay float32
    torch.testing.assert_close(p16, p32, rtol=1e-2, atol=1e-4)

    def cosine(a, b):
        return float(torch.nn.functional.cosine_similarity(torch.cat([a[n].flatten() for n in a]),
                                                           torch.cat([b[n].flatten() for n in a]), dim=0))

    same_batch, other_batch = cosine(g16, g32), cosine(runs["float32", 1][1], g32)
    assert same_batch > 0.8 and other_batch < 0.5, (same_batch, other_batch)
    assert not all(torch.equal(g16[n], g32[n]) for n in g32)  # bfloat16 really changed the arithmetic


def test_bf16_overlapped_passes_match_sequential_passes(tmp_path, pool, embedded_backbone):
    """Under bfloat16 autocast too, the two passes in two threads give bit for bit the losses and gradients of
    the sequential passes (autocast is per thread, so the workers enter it themselves)."""
    cfg = TrainConfig(out=str(tmp_path), precision="bfloat16", batch_size=4, grad_accum=2, **SMALL)
    seq = _one_step(cfg, pool, embedded_backbone, threads=1, overlap=False)
    ovl = _one_step(cfg, pool, embedded_backbone, threads=2, overlap=True)
    assert seq[2] == ovl[2] == {torch.bfloat16}
    assert seq[0][LOSS_NAMES.index("consistency")] > 0
    assert torch.equal(ovl[0], seq[0])
    assert all(torch.equal(ovl[1][n], seq[1][n]) for n in seq[1])

