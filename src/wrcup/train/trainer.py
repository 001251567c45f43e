"""Self-supervised training of an upsampler against its frozen backbone (recipe: docs/DESIGN.md).

Reproducibility: the images of a step, their crop boxes and their augmentations are pure functions of
``(seed, step)``. A resumed run therefore replays exactly the steps a straight run would take; the
checkpoint stores only weights, optimiser, scheduler and the step.

Stopping: SIGINT (Ctrl-C) or SIGTERM during the training loop lets the current step finish, writes a resumable
checkpoint and raises :class:`TrainingInterrupted` (``wrcup train`` exits with 128 + the signal number). Further
signals while stopping are ignored, so a repeated Ctrl-C or a launcher that forwards the signal again cannot
cut the checkpoint write short; SIGKILL still can, and then the previous checkpoint stays whole (see
``checkpoint.py``). Before the loop (loading, filling the target cache) signals act as usual: the cache is
written atomically. The previous handlers are restored when :func:`train` returns or raises.

Multi-process (``torchrun``): ``batch_size`` is the global batch of one optimiser step; each rank
takes an equal share (and splits it further into ``grad_accum`` micro-batches). On CUDA BatchNorm is
synchronised across ranks; on CPU (gloo) SyncBatchNorm does not exist, so batch statistics are per
micro-batch — the same as one process accumulating gradients over the same micro-batches.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .. import __version__
from .._checks import check_choice, check_positive_int
from .._io import atomic_path, file_sha256, read_json, write_json
from . import losses
from .checkpoint import load_checkpoint, load_train_state, save_checkpoint
from .augment import random_aligned_crops
from .views import crop_images, downsample, square_view

LOSS_NAMES = ("local", "global", "consistency", "full")
# settings a resumed run may change: where it runs and finds its images and target cache, how often it saves
# and whether it shows progress; none of them changes the trajectory (the image count is checked). Every other
# setting must equal the one recorded in the run's checkpoint. (``wrcup train --stop-at`` is per invocation.)
RESUME_MAY_DIFFER = ("out", "data", "device", "progress", "checkpoint_every", "cache_targets")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint metadata)."""

    data: list[str]
    out: str
    backbone: str = "dinov2-s14-imgfocus"
    backbone_weights: str | None = None
    operator: str = "wrc-reference"
    residual: bool = False
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 1e-5
    warmup: int = 0
    schedule: str = "cosine"
    high_res: int = 448
    crops: int = 4
    crop_align: int = 28
    # the paper's recipe sums local + global + consistency with weight 1; "full" (off by default) compares the prediction
    # with the backbone's features of the whole high-res view
    loss_weights: dict = field(default_factory=lambda: {"local": 1.0, "global": 1.0, "consistency": 1.0, "full": 0.0})
    augment: bool = True
    cache_targets: str | None = None
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"
    name: str = "wrc"
    progress: bool = True

    def validate(self) -> None:
        if not self.data:
            raise ValueError("data: give at least one image folder")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.grad_accum, "grad_accum")
        check_positive_int(self.crops, "crops", minimum=0)
        check_choice(self.schedule, "schedule", ("cosine", "constant"))
        unknown = set(self.loss_weights) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"loss_weights has unknown losses {sorted(unknown)}; expected a subset of {LOSS_NAMES}")
        if self.high_res % 2 or self.lr <= 0:
            raise ValueError(f"high_res must be even and lr > 0, got high_res={self.high_res}, lr={self.lr}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def resume_differences(self, recorded: "TrainConfig") -> list[tuple[str, object, object]]:
        """``(setting, this value, recorded value)`` for every setting outside :data:`RESUME_MAY_DIFFER` that
        differs from the run being resumed (loss weights compared as weights, an absent loss = 0)."""
        def comparable(cfg, name):
            value = getattr(cfg, name)
            return {k: float(value.get(k, 0.0)) for k in LOSS_NAMES} if name == "loss_weights" else value

        return [(f.name, getattr(self, f.name), getattr(recorded, f.name)) for f in fields(self)
                if f.name not in RESUME_MAY_DIFFER and comparable(self, f.name) != comparable(recorded, f.name)]


def _step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """An independent RNG per (seed, step, stream): no RNG state has to be checkpointed."""
    digest = hashlib.sha256(f"{seed}/{step}/{stream}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return g


def batch_indices(num_images: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Image indices of a step: epochs are seeded permutations, consumed ``batch_size`` at a time."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_images)
        perm = torch.randperm(num_images, generator=_step_generator(seed, epoch, stream=7))
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


def _drop_log_rows_after(log_path: Path, step: int) -> None:
    """Keep the header and the rows of steps ≤ ``step``: a run stopped between checkpoints logged steps that the
    resumed run replays and logs again."""
    lines = log_path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [row for row in lines[1:] if row.strip() and int(row.split(",", 1)[0]) <= step]
    if len(kept) != len(lines):
        with atomic_path(log_path) as tmp:
            tmp.write_text("".join(kept))


class ImagePool:
    """The training images of several folders, indexable; unreadable files are skipped and reported once."""

    def __init__(self, folders):
        from ..data.images import ImageFolder

        self.folders = [ImageFolder(f) for f in folders]
        self.paths = [p for f in self.folders for p in f.paths]
        self._owner = [(f, i) for f in self.folders for i in range(len(f))]

    @property
    def skipped(self) -> list:
        return [s for f in self.folders for s in f.skipped]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        folder, local = self._owner[index]
        return folder[local]["image"]


class TargetSource:
    """Low-res views and backbone targets for a list of images.

    Online: runs the frozen backbone every step (random crops per step). Cached (``cache_dir``): each
    image gets ``crops`` fixed crops (seeded by the image index), and its low-res view, low-res features
    and crop features are computed once and stored (float16) — the backbone dominates CPU training cost.
    """

    def __init__(self, images, backbone, cfg: TrainConfig, device):
        self.images, self.backbone, self.cfg, self.device = images, backbone, cfg, device
        self.low_res = cfg.high_res // 2
        self.patch = backbone.patch_size
        if self.low_res % backbone.patch_size or cfg.crop_align % backbone.patch_size:
            raise ValueError(f"high_res/2={self.low_res} and crop_align={cfg.crop_align} must be multiples of "
                             f"the backbone patch size {backbone.patch_size}")
        self.cache_dir = Path(cfg.cache_targets) if cfg.cache_targets else None
        self.need_full = float(cfg.loss_weights.get("full", 0.0)) != 0.0
        self._digests: list[str | None] = [None] * len(images)
        self._weights_id = backbone.weights_identity() if self.cache_dir else None

    def _views(self, idx: list[int], gens: list[torch.Generator]):
        high = torch.stack([square_view(self.images.load(i), self.cfg.high_res) for i in idx]).to(self.device)
        low = downsample(high, self.low_res)
        boxes = torch.stack([random_aligned_crops(g, self.cfg.high_res, self.low_res, self.cfg.crop_align, self.cfg.crops)
                             for g in gens]) if self.cfg.crops else torch.zeros(len(idx), 0, 2, dtype=torch.long)
        # backbone outputs are inference-mode tensors: clone them so autograd may save them
        z_low = self.backbone(low).clone()
        crop_t = None
        if self.cfg.crops:
            crop_t = self.backbone(crop_images(high, boxes, self.low_res)).clone()
            crop_t = crop_t.reshape(len(idx), self.cfg.crops, *crop_t.shape[1:])
        z_high = self.backbone(high).clone() if self.need_full else None
        return low, z_low, crop_t, boxes, z_high

    def _cache_file(self, i: int) -> Path:
        # keyed on the image's bytes, not its path or mtime: a copied or restored image folder keeps its cache,
        # and a changed image, backbone weights or crop setting gets new targets
        key = f"v2|{self._image_digest(i)}|{self.cfg.backbone}|{self._weights_id}|{self.cfg.high_res}|" \
              f"{self.cfg.crops}|{self.cfg.crop_align}|{self.cfg.seed}"
        return self.cache_dir / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".safetensors")

    def _image_digest(self, i: int) -> str:
        if self._digests[i] is None:
            self._digests[i] = file_sha256(self.images.paths[i])
        return self._digests[i]

    def _full_file(self, i: int) -> Path:
        return self._cache_file(i).with_suffix(".full.safetensors")

    def fill_cache(self, indices: list[int], show_progress: bool) -> None:
        from safetensors.torch import save_file

        todo = [i for i in indices if not self._cache_file(i).exists()]
        for i in tqdm(todo, desc="caching backbone targets", disable=not show_progress or not todo, unit="img"):
            low, z_low, crop_t, boxes, _ = self._views([i], [_step_generator(self.cfg.seed, i, stream=11)])
            tensors = {"low": (low[0] * 255).round().to(torch.uint8).cpu(), "z_low": z_low[0].half().cpu().contiguous(),
                       "boxes": boxes[0].cpu()}
            if crop_t is not None:
                tensors["crops"] = crop_t[0].half().cpu().contiguous()
            with atomic_path(self._cache_file(i)) as tmp:
                save_file(tensors, str(tmp))
        # full-view targets live in a file of their own, so adding the "full" loss reuses the crop cache
        todo = [i for i in indices if self.need_full and not self._full_file(i).exists()]
        for i in tqdm(todo, desc="caching full-view targets", disable=not show_progress or not todo, unit="img"):
            high = square_view(self.images.load(i), self.cfg.high_res)[None].to(self.device)
            with atomic_path(self._full_file(i)) as tmp:
                save_file({"z_high": self.backbone(high)[0].half().cpu().contiguous()}, str(tmp))

    def batch(self, idx: list[int], step: int, offset: int = 0):
        """→ low B×3×S×S [0,1], z_low B×C×h×w, crop targets B×n×C×h×w (or None), boxes B×n×2 in high-res
        tokens, full-view targets B×C×2h×2w (or None).

        ``offset`` is the position of ``idx[0]`` in the step's global batch (it seeds the crops).
        """
        if self.cache_dir is None:
            gens = [_step_generator(self.cfg.seed, step, stream=100 + offset + j) for j in range(len(idx))]
            low, z_low, crop_t, boxes, z_high = self._views(idx, gens)
        else:
            from safetensors.torch import load_file

            items = [load_file(str(self._cache_file(i))) for i in idx]
            low = torch.stack([d["low"] for d in items]).float().div(255).to(self.device)
            z_low = torch.stack([d["z_low"] for d in items]).float().to(self.device)
            boxes = torch.stack([d["boxes"] for d in items])
            crop_t = torch.stack([d["crops"] for d in items]).float().to(self.device) if self.cfg.crops else None
            z_high = torch.stack([load_file(str(self._full_file(i)))["z_high"] for i in idx]).float().to(
                self.device) if self.need_full else None
        return low, z_low, crop_t, boxes // self.patch, z_high


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`train` after SIGINT/SIGTERM, once the checkpoint of the last finished step is written.

    A KeyboardInterrupt, so code that stops on Ctrl-C stops here too. ``exit_code`` is 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM); the message says the step, the checkpoint and how to resume.
    """

    def __init__(self, signum: int, step: int, steps: int, checkpoint: Path, run_dir: Path, is_main: bool = True):
        self.signum, self.step, self.steps, self.checkpoint, self.is_main = signum, step, steps, checkpoint, is_main
        name = signal.Signals(signum).name
        if step >= steps:
            text = f"stopped by {name} after the last step ({step}); final checkpoint: {checkpoint}"
        else:
            text = (f"stopped by {name} at step {step} of {steps}; checkpoint: {checkpoint}; "
                    f"resume with: wrcup train --resume {run_dir}")
        super().__init__(text)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StopOnSignal:
    """Notes the first SIGINT/SIGTERM instead of acting on it; the loop checks :attr:`signum` after each step.

    :meth:`arm` installs the handlers (only possible in the main thread; elsewhere signals keep their handlers),
    leaving the context restores the previous ones.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _note(self, signum, frame) -> None:
        # nothing else here: a handler runs between two bytecodes of the loop, which may be writing to stderr
        if self.signum is None:
            self.signum = signum

    def arm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._note)

    def __enter__(self) -> "_StopOnSignal":
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class _Distributed:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world
        return values

    def first_signal(self, signum: int | None, device) -> int | None:
        """A stop signal any rank received (every rank must leave the loop after the same step)."""
        if not self.enabled:
            return signum
        flag = torch.tensor([signum or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag) or None


def train(cfg: TrainConfig, resume: bool = False, images=None, backbone=None, stop_at: int | None = None) -> dict:
    """Run (or resume) a training run; returns the final summary (also written to ``out/summary.json``).

    ``stop_at`` ends this invocation after that many steps with a resumable checkpoint (a time-boxed run;
    the schedule still spans ``cfg.steps``). ``images`` (an :class:`ImagePool`) and ``backbone`` may be
    passed in to share them between runs. ``resume`` continues from ``out/last.safetensors``; ``cfg`` must
    equal the recorded settings except :data:`RESUME_MAY_DIFFER`.

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM during the loop, once the checkpoint and summary are written.
    """
    with _StopOnSignal() as stop:
        return _train(cfg, resume, images, backbone, stop_at, stop)


def _train(cfg: TrainConfig, resume: bool, images, backbone, stop_at: int | None, stop: _StopOnSignal) -> dict:
    from .. import backbones as backbones_mod
    from ..models.upsampler import build_upsampler
    from .augment import photometric_augment

    cfg.validate()
    ddp = _Distributed()
    device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    micro = cfg.batch_size // (ddp.world * cfg.grad_accum)
    if micro * ddp.world * cfg.grad_accum != cfg.batch_size:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by world size ({ddp.world}) × "
                         f"grad_accum ({cfg.grad_accum})")
    out = Path(cfg.out)
    is_main = ddp.rank == 0
    torch.manual_seed(cfg.seed)  # parameter initialisation: identical on every rank

    if images is None:
        images = ImagePool(cfg.data)
    if backbone is None:
        backbone = backbones_mod.load(cfg.backbone, weights=cfg.backbone_weights, device=device)
    model = build_upsampler(cfg.operator, backbone.dim, backbone.patch_size, residual=cfg.residual).to(device)
    if ddp.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    targets = TargetSource(images, backbone, cfg, device)

    step, elapsed = 0, 0.0
    ckpt = out / "last.safetensors"
    if resume:
        state, meta = load_checkpoint(ckpt)
        differences = cfg.resume_differences(TrainConfig.from_dict(meta["config"]))
        if differences:
            raise ValueError("resume: " + "; ".join(f"{k}={new!r} differs from the recorded {old!r}"
                                                    for k, new, old in differences)
                             + f" (in {ckpt}); only {', '.join(RESUME_MAY_DIFFER)} may change")
        recorded_images = meta.get("data", {}).get("num_images")
        if recorded_images is not None and recorded_images != len(images):
            raise ValueError(f"resume: the image folders {cfg.data} hold {len(images)} readable images, the run in "
                             f"{ckpt} was trained on {recorded_images}; its batches cannot be replayed")
        model.load_state_dict(state)
        tstate = load_train_state(ckpt)
        optimizer.load_state_dict(tstate["optimizer"])
        scheduler.load_state_dict(tstate["scheduler"])
        step, elapsed = int(tstate["step"]), float(tstate["elapsed"])
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if ddp.enabled else model

    if targets.cache_dir is not None:
        # every rank fills its share of the cache, then all wait for the others
        targets.fill_cache(list(range(ddp.rank, len(images), ddp.world)), show_progress=cfg.progress and is_main)
        if ddp.enabled:
            dist.barrier()

    log_path = out / "log.csv"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume and log_path.exists():
            _drop_log_rows_after(log_path, step)
        else:
            log_path.write_text(",".join(["step", "loss", *LOSS_NAMES, "lr", "images_per_s", "elapsed_s"]) + "\n")
    weights = {k: float(cfg.loss_weights.get(k, 0.0)) for k in LOSS_NAMES}
    use_amp = device.type == "cuda"
    recent: list[torch.Tensor] = []
    saved_step = None

    def save(final: bool) -> None:
        nonlocal saved_step
        saved_step = step
        if not is_main:
            return
        last = torch.stack(recent[-50:]).mean(0).tolist() if recent else [float("nan")] * (1 + len(LOSS_NAMES))
        meta = {
            "backbone": cfg.backbone, "dim": backbone.dim, "patch_size": backbone.patch_size,
            "operator": cfg.operator, "residual": cfg.residual, "steps": step, "finished": final,
            "data": {"folders": [str(d) for d in cfg.data], "num_images": len(images),
                     "skipped_unreadable": len(getattr(images, "skipped", []))},
            "final_losses": dict(zip(("total",) + LOSS_NAMES, last)), "wall_time_s": round(elapsed, 1),
            "code_version": {"wrcup": __version__, "git": _git_revision()}, "config": asdict(cfg),
        }
        train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "step": step, "elapsed": elapsed}
        save_checkpoint(ckpt, model.state_dict(), meta, train_state)
        if final:
            save_checkpoint(out / f"{cfg.name}.safetensors", model.state_dict(), meta)

    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not (cfg.progress and is_main))
    model.train()
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    stop.arm()
    stop_signal = None
    while step < end and stop_signal is None:
        t0 = time.perf_counter()
        idx = batch_indices(len(images), cfg.batch_size, step, cfg.seed)
        first = ddp.rank * micro * cfg.grad_accum  # this rank's share of the global batch
        idx = idx[first:first + micro * cfg.grad_accum]
        optimizer.zero_grad(set_to_none=True)
        parts = torch.zeros(len(LOSS_NAMES), device=device)
        for a in range(cfg.grad_accum):
            sub = idx[a * micro:(a + 1) * micro]
            low, z_low, crop_t, boxes, z_high = targets.batch(sub, step, offset=first + a * micro)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = ddp_model(backbone.normalise(low), z_low)
                terms = {}
                if weights["local"] and crop_t is not None:
                    terms["local"] = losses.local_crop_loss(pred.float(), crop_t, boxes)
                if weights["global"]:
                    terms["global"] = losses.global_loss(pred.float(), z_low)
                if weights["full"]:
                    terms["full"] = losses.cosine_minmax_loss(pred.float(), z_high)
                if weights["consistency"]:
                    g = _step_generator(cfg.seed, step, stream=200 + (first + a * micro) // micro)
                    aug = photometric_augment(low, g) if cfg.augment else low
                    pred_aug = ddp_model(backbone.normalise(aug), z_low)
                    terms["consistency"] = losses.consistency_loss(pred_aug.float(), pred.float())
                loss = sum(weights[k] * v for k, v in terms.items())
            (loss / cfg.grad_accum).backward()
            parts += torch.stack([terms.get(k, torch.zeros((), device=device)).detach() for k in LOSS_NAMES]) / cfg.grad_accum
        optimizer.step()
        scheduler.step()
        step += 1
        parts = ddp.mean(parts)
        total = sum(weights[k] * parts[i] for i, k in enumerate(LOSS_NAMES))
        recent.append(torch.cat([total.reshape(1), parts]).cpu())
        dt = time.perf_counter() - t0
        elapsed += dt
        if is_main:
            with log_path.open("a", newline="") as fh:
                csv.writer(fh).writerow([step, f"{float(total):.6f}", *(f"{float(p):.6f}" for p in parts),
                                         f"{scheduler.get_last_lr()[0]:.3e}", f"{cfg.batch_size / dt:.2f}", f"{elapsed:.1f}"])
            bar.set_postfix(loss=f"{float(total):.4f}", img_s=f"{cfg.batch_size / dt:.1f}")
            bar.update(1)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < end:
            save(final=False)
        stop_signal = ddp.first_signal(stop.signum, device)
    bar.close()
    finished = step >= cfg.steps
    if saved_step != step:  # a signal right after a periodic checkpoint needs no second one
        save(final=finished)
    stop_signal = stop_signal or stop.signum  # also one that came after the last step
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    summary = {"steps": step, "total_steps": cfg.steps, "finished": finished,
               "stopped_by": signal.Signals(stop_signal).name if stop_signal else (None if finished else "stop_at"),
               "wall_time_s": round(elapsed, 1), "param_checksum": checksum,
               "final_losses": dict(zip(("total",) + LOSS_NAMES, torch.stack(recent[-50:]).mean(0).tolist()))
               if recent else {},
               # the checkpoint holding these weights: the named one only exists once the run is finished
               "checkpoint": str(out / f"{cfg.name}.safetensors" if finished else ckpt)}
    if is_main:
        write_json(out / "summary.json", summary)
    if stop_signal:
        raise TrainingInterrupted(stop_signal, step, cfg.steps, Path(summary["checkpoint"]), out, is_main)
    return summary


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.from_dict(read_json(path))
