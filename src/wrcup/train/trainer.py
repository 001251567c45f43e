"""Self-supervised training of an upsampler against its frozen backbone (recipe: docs/DESIGN.md): the run.

The parts, one module each: the settings (:mod:`.config`), one optimiser step (:mod:`.step`), the processes of
a torchrun job (:mod:`.distributed`), stopping on a signal (:mod:`.stopping`), the checkpoint files
(:mod:`wrcup.models.checkpoint`). This module holds what a run does with them: which images, scale and learning
rate each step has, the checkpoints of a run folder (:class:`CheckpointSaver`) and the loop (:func:`train`).

Reproducibility: the images of a step, their crop boxes and their augmentations are pure functions of
``(seed, step)``. A resumed run therefore replays exactly the steps a straight run would take; the
checkpoint stores only weights, optimiser, scheduler, the step and, with ``ema``, the moving average.
"""
from __future__ import annotations

import csv
import functools
import math
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import __version__
from .._io import atomic_path, write_json
from ..models.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from .config import LOSS_NAMES, RESUME_MAY_DIFFER, TrainConfig
from .distributed import Distributed
from .step import build_model, build_optimizer, train_step
from .stopping import StopOnSignal, TrainingInterrupted
from .targets import ImagePool, TargetSource, step_generator

def batch_indices(num_images: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Image indices of a step: epochs are seeded permutations, consumed ``batch_size`` at a time."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_images)
        perm = torch.randperm(num_images, generator=step_generator(seed, epoch, stream=7))
        take = min(batch_size - len(out), num_images - offset)
        out.extend(perm[offset:offset + take].tolist())
    return out


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def scale_index(step: int, cfg: TrainConfig) -> int:
    """Which of ``cfg.scales()`` the step trains on: drawn from (seed, step) with weights ``cfg.scale_mix``
    (equal when None); always 0 for a single scale (no draw)."""
    scales = cfg.scales()
    if len(scales) == 1:
        return 0
    weights = torch.tensor([1.0] * len(scales) if cfg.scale_mix is None else [float(w) for w in cfg.scale_mix],
                           dtype=torch.float64)
    u = float(torch.rand((), generator=step_generator(cfg.seed, step, stream=300), dtype=torch.float64))
    return min(int((weights.cumsum(0) / weights.sum() <= u).sum()), len(scales) - 1)


def _drop_log_rows_after(log_path: Path, step: int) -> None:
    """Keep the header and the rows of steps ≤ ``step``: a run stopped between checkpoints logged steps that the
    resumed run replays and logs again."""
    lines = log_path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [row for row in lines[1:] if row.strip() and int(row.split(",", 1)[0]) <= step]
    if len(kept) != len(lines):
        with atomic_path(log_path) as tmp:
            tmp.write_text("".join(kept))


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class Progress:
    """Where a run stands: optimiser steps taken, seconds spent in them, and per step the loss row
    (total, then :data:`LOSS_NAMES`)."""

    step: int = 0
    elapsed: float = 0.0
    recent: list[torch.Tensor] = field(default_factory=list)

    def mean_losses(self) -> list[float] | None:
        """The loss rows averaged over the last 50 steps (None before the first step)."""
        return torch.stack(self.recent[-50:]).mean(0).tolist() if self.recent else None


def run_metadata(cfg: TrainConfig, backbone, images, progress: Progress, final: bool) -> dict:
    """The metadata of the run's checkpoints (what :func:`wrcup.load` and ``--resume`` read back)."""
    last = progress.mean_losses() or [float("nan")] * (1 + len(LOSS_NAMES))
    return {
        "backbone": cfg.backbone, "dim": backbone.dim, "patch_size": backbone.patch_size,
        "operator": cfg.operator, "residual": cfg.residual, "steps": progress.step, "finished": final,
        "data": {"folders": [str(d) for d in cfg.data], "num_images": len(images),
                 "skipped_unreadable": len(getattr(images, "skipped", []))},
        "final_losses": dict(zip(("total",) + LOSS_NAMES, last)), "wall_time_s": round(progress.elapsed, 1),
        "code_version": {"wrcup": __version__, "git": _git_revision()}, "config": asdict(cfg),
    }


class CheckpointSaver:
    """The checkpoints of a run folder ``out`` (written by the main rank only, ``write``):

    * ``last.safetensors`` with its training state (optimiser, scheduler, step, elapsed): the resumable
      checkpoint, replaced as one set by every :meth:`save`;
    * ``<name>.safetensors``: a copy of the weights once the run is finished;
    * ``step-NNNNNN.safetensors``: weights snapshots every ``keep_every`` steps (:meth:`keep`; 0: none);
    * with ``ema`` (a ``torch.optim.swa_utils.AveragedModel`` of the model): ``<name>.ema.safetensors`` and
      ``step-NNNNNN.ema.safetensors`` beside the named copy and the snapshots, holding the averaged weights; the
      average's own state travels in the resumable checkpoint's training state.

    ``describe(final)`` gives the metadata; it is called only when a file is written.
    """

    def __init__(self, out: Path, name: str, model: torch.nn.Module, optimizer, scheduler,
                 describe: Callable[[bool], dict], keep_every: int = 0, write: bool = True, ema=None):
        self.out, self.model, self.optimizer, self.scheduler = out, model, optimizer, scheduler
        self.ema = ema
        self.last, self.final = out / "last.safetensors", out / f"{name}.safetensors"
        self.describe, self.keep_every, self.write = describe, keep_every, write
        self.saved_step: int | None = None  # the step of the latest save (on every rank)

    def resume(self, cfg: TrainConfig, num_images: int) -> tuple[int, float]:
        """Load ``last.safetensors`` into the model, optimiser and scheduler; (step, elapsed) of the run. ``cfg``
        must equal the recorded settings except :data:`RESUME_MAY_DIFFER`, and the images their number."""
        state, meta = load_checkpoint(self.last)
        differences = cfg.resume_differences(TrainConfig.from_dict(meta["config"]))
        if differences:
            raise ValueError("resume: " + "; ".join(f"{k}={new!r} differs from the recorded {old!r}"
                                                    for k, new, old in differences)
                             + f" (in {self.last}); only {', '.join(RESUME_MAY_DIFFER)} may change")
        recorded_images = meta.get("data", {}).get("num_images")
        if recorded_images is not None and recorded_images != num_images:
            raise ValueError(f"resume: the image folders {cfg.data} hold {num_images} readable images, the run in "
                             f"{self.last} was trained on {recorded_images}; its batches cannot be replayed")
        self.model.load_state_dict(state)
        train_state = load_train_state(self.last)
        self.optimizer.load_state_dict(train_state["optimizer"])
        self.scheduler.load_state_dict(train_state["scheduler"])
        if self.ema is not None and "ema" in train_state:  # absent: switched on now, starts at the next step
            self.ema.load_state_dict(train_state["ema"])
        return int(train_state["step"]), float(train_state["elapsed"])

    def save(self, progress: Progress, final: bool) -> None:
        """Replace the resumable checkpoint by the state after ``progress.step``; ``final``: also the named copy."""
        self.saved_step = progress.step
        if not self.write:
            return
        meta = self.describe(final)
        train_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                       "step": progress.step, "elapsed": progress.elapsed}
        if self.ema is not None:
            train_state["ema"] = self.ema.state_dict()
        save_checkpoint(self.last, self.model.state_dict(), meta, train_state)
        if final:
            save_checkpoint(self.final, self.model.state_dict(), meta)
            self._save_average(self.final, meta)

    def keep(self, step: int, finished: bool) -> None:
        """The weights snapshot of ``step`` when it is due (every ``keep_every`` steps)."""
        if self.keep_every and step % self.keep_every == 0 and self.write:
            path, meta = self.out / f"step-{step:06d}.safetensors", self.describe(finished)
            save_checkpoint(path, self.model.state_dict(), meta)
            self._save_average(path, meta)

    def _save_average(self, path: Path, meta: dict) -> None:
        """``path`` with ``.ema`` before its suffix: the moving average's weights, when there is one."""
        if self.ema is None:
            return
        averaged = {"decay": meta["config"]["ema"], "updates": int(self.ema.n_averaged)}
        save_checkpoint(path.with_name(f"{path.stem}.ema.safetensors"), self.ema.module.state_dict(),
                        {**meta, "weights": "exponential moving average", "ema": averaged})


def train(cfg: TrainConfig, resume: bool = False, images=None, backbone=None, stop_at: int | None = None) -> dict:
    """Run (or resume) a training run; returns the final summary (also written to ``out/summary.json``).

    ``stop_at`` ends this invocation after that many steps with a resumable checkpoint (a time-boxed run;
    the schedule still spans ``cfg.steps``). ``images`` (an :class:`ImagePool`) and ``backbone`` may be
    passed in to share them between runs. ``resume`` continues from ``out/last.safetensors``; ``cfg`` must
    equal the recorded settings except :data:`RESUME_MAY_DIFFER`. Under torchrun every rank runs this
    (:mod:`wrcup.train.distributed`).

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM during the loop, once the checkpoint and summary are written
            (:mod:`wrcup.train.stopping`).
    """
    with StopOnSignal() as stop:
        return _train(cfg, resume, images, backbone, stop_at, stop)


def _train(cfg: TrainConfig, resume: bool, images, backbone, stop_at: int | None, stop: StopOnSignal) -> dict:
    from .. import backbones as backbones_mod

    cfg.validate()
    ddp = Distributed()
    device = ddp.device(cfg.device)
    micro = ddp.micro_batch(cfg.batch_size, cfg.grad_accum)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # parameter initialisation: identical on every rank

    if images is None:
        images = ImagePool(cfg.data)
    if backbone is None:
        backbone = backbones_mod.load(cfg.backbone, weights=cfg.backbone_weights, device=device)
    model = ddp.convert_batchnorm(build_model(cfg, backbone, device), device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    sources = [TargetSource(images, backbone, cfg, device, high_res=r) for r in cfg.scales()]

    progress = Progress()
    saver = CheckpointSaver(out, cfg.name, model, optimizer, scheduler,
                            functools.partial(run_metadata, cfg, backbone, images, progress),
                            keep_every=cfg.keep_every, write=ddp.is_main, ema=ema)
    if resume:
        progress.step, progress.elapsed = saver.resume(cfg, len(images))
    ddp_model = ddp.wrap(model)

    if cfg.cache_targets is not None:
        # every rank fills its share of the cache, then all wait for the others
        for targets in sources:
            targets.fill_cache(list(range(ddp.rank, len(images), ddp.world)), show_progress=cfg.progress and ddp.is_main)
        ddp.barrier()

    log_path = out / "log.csv"
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume and log_path.exists():
            _drop_log_rows_after(log_path, progress.step)
        else:
            log_path.write_text(",".join(["step", "loss", *LOSS_NAMES, "lr", "images_per_s", "elapsed_s"]) + "\n")
    weights = cfg.loss_weight_values()

    bar = tqdm(total=cfg.steps, initial=progress.step, desc="train", unit="step",
               disable=not (cfg.progress and ddp.is_main))
    model.train()
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    stop.arm()
    stop_signal = None
    while progress.step < end and stop_signal is None:
        step = progress.step
        t0 = time.perf_counter()
        first, idx = ddp.share(batch_indices(len(images), cfg.batch_size, step, cfg.seed), micro, cfg.grad_accum)
        targets = sources[scale_index(step, cfg)]
        parts = train_step(ddp_model, backbone, targets, optimizer, scheduler, cfg, step, idx, first, micro)
        if ema is not None:
            ema.update_parameters(model)
        step = progress.step = step + 1
        parts = ddp.mean(parts)
        total = sum(weights[k] * parts[i] for i, k in enumerate(LOSS_NAMES))
        progress.recent.append(torch.cat([total.reshape(1), parts]).cpu())
        dt = time.perf_counter() - t0
        progress.elapsed += dt
        if ddp.is_main:
            with log_path.open("a", newline="") as fh:
                csv.writer(fh).writerow([step, f"{float(total):.6f}", *(f"{float(p):.6f}" for p in parts),
                                         f"{scheduler.get_last_lr()[0]:.3e}", f"{cfg.batch_size / dt:.2f}",
                                         f"{progress.elapsed:.1f}"])
            bar.set_postfix(loss=f"{float(total):.4f}", img_s=f"{cfg.batch_size / dt:.1f}")
            bar.update(1)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < end:
            saver.save(progress, final=False)
        saver.keep(step, finished=step >= cfg.steps)
        stop_signal = ddp.first_signal(stop.signum, device)
    bar.close()
    finished = progress.step >= cfg.steps
    if saver.saved_step != progress.step:  # a signal right after a periodic checkpoint needs no second one
        saver.save(progress, final=finished)
    stop_signal = stop_signal or stop.signum  # also one that came after the last step
    summary = _summary(cfg, model, progress, saver, finished, stop_signal)
    if ddp.is_main:
        write_json(out / "summary.json", summary)
    if stop_signal:
        raise TrainingInterrupted(stop_signal, progress.step, cfg.steps, Path(summary["checkpoint"]), out, ddp.is_main)
    return summary


def _summary(cfg: TrainConfig, model, progress: Progress, saver: CheckpointSaver, finished: bool,
             stop_signal: int | None) -> dict:
    """What :func:`train` returns and writes to ``summary.json``."""
    losses = progress.mean_losses()
    return {"steps": progress.step, "total_steps": cfg.steps, "finished": finished,
            "stopped_by": signal.Signals(stop_signal).name if stop_signal else (None if finished else "stop_at"),
            "wall_time_s": round(progress.elapsed, 1),
            "param_checksum": float(sum(p.detach().double().sum() for p in model.parameters())),
            "final_losses": dict(zip(("total",) + LOSS_NAMES, losses)) if losses is not None else {},
            # the checkpoint holding these weights: the named one only exists once the run is finished
            "checkpoint": str(saver.final if finished else saver.last)}
