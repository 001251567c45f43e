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

import copy
import csv
import math
import os
import signal
import subprocess
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .. import __version__
from .._checks import check_choice, check_positive_int
from .._io import atomic_path, read_json, write_json
from . import losses
from .checkpoint import load_checkpoint, load_train_state, save_checkpoint
from .targets import ImagePool, TargetSource, step_generator

LOSS_NAMES = ("local", "global", "consistency", "full")
# settings a resumed run may change: where it runs and finds its images and target cache, how often it saves
# and whether it shows progress; none of them changes the trajectory (the image count is checked). Every other
# setting must equal the one recorded in the run's checkpoint. (``wrcup train --stop-at`` is per invocation.)
RESUME_MAY_DIFFER = ("out", "data", "device", "progress", "checkpoint_every", "keep_every", "cache_targets")


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
    # the high-res view side; a list trains on several grid scales (e.g. [448, 896]: 16→32 and 32→64 token
    # grids), each step on one scale drawn from (seed, step) with the relative frequencies ``scale_mix``
    high_res: int | list[int] = 448
    scale_mix: list[float] | None = None
    crops: int = 4
    crop_align: int = 28
    # the paper's recipe sums local + global + consistency with weight 1; "full" (off by default) compares the prediction
    # with the backbone's features of the whole high-res view
    loss_weights: dict = field(default_factory=lambda: {"local": 1.0, "global": 1.0, "consistency": 1.0, "full": 0.0})
    augment: bool = True
    cache_targets: str | None = None
    checkpoint_every: int = 500
    # every N steps also keep a weights + metadata snapshot step-NNNNNN.safetensors (for learning curves); 0: off
    keep_every: int = 0
    seed: int = 0
    device: str = "cpu"
    name: str = "wrc"
    progress: bool = True
    # the faster training step (same losses and update, different floating-point rounding): the WRC layers
    # compute their high-res weight convolution factored (wrcup.ops.layer.conv_of_bilinear_prior), AdamW runs
    # fused, and on CPU the clean and augmented passes overlap in two threads (train_step). False keeps the
    # original step, e.g. to compare speed (benchmarks/train.py) or to continue a run started without it.
    fast: bool = True

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
        check_positive_int(self.keep_every, "keep_every", minimum=0)
        scales = self.scales()
        if not scales or any(isinstance(r, bool) or not isinstance(r, int) or r <= 0 or r % 2 for r in scales):
            raise ValueError(f"high_res must be a positive even size or a list of them, got {self.high_res!r}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"high_res lists a size twice: {self.high_res!r}")
        if self.scale_mix is not None:
            mix = list(self.scale_mix)
            if len(mix) != len(scales) or any(not float(w) > 0 for w in mix):
                raise ValueError(f"scale_mix must give one positive weight per high_res size {scales}, "
                                 f"got {self.scale_mix!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def scales(self) -> list[int]:
        """The high-res view sizes trained on (one unless ``high_res`` is a list)."""
        return list(self.high_res) if isinstance(self.high_res, (list, tuple)) else [self.high_res]

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


def build_model(cfg: TrainConfig, backbone, device) -> torch.nn.Module:
    """The upsampler to train, initialised from the current RNG state; ``cfg.fast`` selects the factored
    high-res weight convolution of the WRC layers (same parameters, same function up to rounding)."""
    from ..models.upsampler import build_upsampler

    model = build_upsampler(cfg.operator, backbone.dim, backbone.patch_size, residual=cfg.residual).to(device)
    for module in model.modules():
        if hasattr(module, "prior_conv"):  # the original step keeps the direct convolution
            module.prior_conv = "factored" if cfg.fast else "direct"
    return model


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over the model's parameters (fused kernel with ``cfg.fast``; the same state dict either way)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             **({"fused": True} if cfg.fast else {}))


def train_step(net, backbone, targets: TargetSource, optimizer, scheduler, cfg: TrainConfig, step: int,
               idx: list[int], first: int, micro: int, mark=None, overlap: bool | None = None) -> torch.Tensor:
    """One optimiser step on this rank's images ``idx`` in ``cfg.grad_accum`` micro-batches of ``micro``.

    ``first`` is the position of ``idx[0]`` in the step's global batch (it seeds the crops and augmentations).
    Per micro-batch: targets and views, the prediction from the clean and (for the consistency loss) from the
    augmented guidance image, the losses, backward; then the optimiser and scheduler step.

    ``overlap`` runs the clean and the augmented pass side by side in two threads (:func:`_overlapped_passes`);
    None: when ``cfg.fast`` and the step allows it (CPU, one process, ≥ 2 threads, a consistency loss).
    ``mark(phase)``, when given, is called at the end of each phase ("data", "augment", "forward", "loss",
    "backward", "optimizer"; the benchmark's breakdown; overlapped passes count as "forward").
    Returns the loss terms in ``LOSS_NAMES`` order, averaged over the micro-batches (not over ranks), as a
    device tensor (no host synchronisation).
    """
    from .augment import photometric_augment

    mark = mark or (lambda phase: None)
    device = next(iter(optimizer.param_groups[0]["params"])).device
    weights = {k: float(cfg.loss_weights.get(k, 0.0)) for k in LOSS_NAMES}
    if overlap is None:
        overlap = cfg.fast and _can_overlap(net, device, weights)
    use_amp = device.type == "cuda"
    optimizer.zero_grad(set_to_none=True)
    parts = torch.zeros(len(LOSS_NAMES), device=device)
    mark("optimizer")
    for a in range(cfg.grad_accum):
        sub = idx[a * micro:(a + 1) * micro]
        low, z_low, crop_t, boxes, z_high = targets.batch(sub, step, offset=first + a * micro)
        mark("data")
        g = step_generator(cfg.seed, step, stream=200 + (first + a * micro) // micro)
        if overlap:
            terms = _overlapped_passes(net, backbone, cfg, weights, low, z_low, crop_t, boxes, z_high, g)
            mark("forward")
        else:
            image, image_aug = backbone.normalise(low), None
            if weights["consistency"]:
                image_aug = backbone.normalise(photometric_augment(low, g) if cfg.augment else low)
            mark("augment")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = net(image, z_low)
                pred_aug = net(image_aug, z_low) if image_aug is not None else None
                mark("forward")
                terms = _clean_terms(pred, weights, z_low, crop_t, boxes, z_high)
                if pred_aug is not None:
                    terms["consistency"] = losses.consistency_loss(pred_aug.float(), pred.float())
                loss = sum(weights[k] * v for k, v in terms.items())
            mark("loss")
            (loss / cfg.grad_accum).backward()
            mark("backward")
        parts += torch.stack([terms.get(k, torch.zeros((), device=device)).detach() for k in LOSS_NAMES]) / cfg.grad_accum
    optimizer.step()
    scheduler.step()
    mark("optimizer")
    return parts


def _clean_terms(pred, weights, z_low, crop_t, boxes, z_high) -> dict:
    """The loss terms of the clean prediction (local, global, full), in that order."""
    terms = {}
    if weights["local"] and crop_t is not None:
        terms["local"] = losses.local_crop_loss(pred.float(), crop_t, boxes)
    if weights["global"]:
        terms["global"] = losses.global_loss(pred.float(), z_low)
    if weights["full"]:
        terms["full"] = losses.cosine_minmax_loss(pred.float(), z_high)
    return terms


def _can_overlap(net, device, weights) -> bool:
    """Overlapped passes need: CPU (GPU kernels already fill the device), a plain module (DDP reduces gradients
    in backward()), two threads to split, a second pass to run, and BatchNorms with a momentum (their running
    statistics are merged afterwards)."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return (device.type == "cpu" and not isinstance(net, torch.nn.parallel.DistributedDataParallel)
            and torch.get_num_threads() >= 2 and bool(weights["consistency"])
            and all(m.momentum is not None and not isinstance(m, torch.nn.SyncBatchNorm) for m in norms))


# per model: a twin sharing its parameters with its own BatchNorm buffers (the augmented pass runs on it)
_TWINS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_PASS_POOL: dict[int, ThreadPoolExecutor] = {}


def _twin(model: torch.nn.Module):
    if model not in _TWINS:
        twin = copy.deepcopy(model)
        for mine, theirs in zip(twin.modules(), model.modules()):
            for name in list(mine._parameters):
                mine._parameters[name] = theirs._parameters[name]
        norms = [(theirs, mine) for theirs, mine in zip(model.modules(), twin.modules())
                 if isinstance(theirs, torch.nn.modules.batchnorm._BatchNorm) and theirs.track_running_stats]
        _TWINS[model] = (twin, norms)
    twin, norms = _TWINS[model]
    twin.train(model.training)
    return twin, norms


def _pass_pool(threads: int) -> ThreadPoolExecutor:
    """Two worker threads with ``threads`` intra-op threads each, kept for the whole run (setting the thread
    count clears oneDNN's primitive cache, so it is done once per worker)."""
    if threads not in _PASS_POOL:
        _PASS_POOL[threads] = ThreadPoolExecutor(2, thread_name_prefix="wrcup-pass", initializer=torch.set_num_threads,
                                                 initargs=(threads,))
    return _PASS_POOL[threads]


def _overlapped_passes(model, backbone, cfg, weights, low, z_low, crop_t, boxes, z_high, generator) -> dict:
    """The clean and the augmented pass of one micro-batch in two threads, each with half the intra-op threads.

    Same losses and gradients as the sequential passes, in another rounding: each pass differentiates its own
    losses (clean: local/global/full; augmented: consistency against the detached clean prediction) and the
    two gradients are added in a fixed order into ``.grad``. The augmented pass runs on a twin module sharing
    the parameters; BatchNorm running statistics are merged as if the clean pass had updated them first:
    r ← (1 − m)·r_clean + (r_aug − (1 − m)·r_before). Deterministic for a given thread count.
    """
    from .augment import photometric_augment

    twin, norms = _twin(model)
    before = [(o.running_mean.clone(), o.running_var.clone()) for o, _ in norms]
    with torch.no_grad():
        for o, t in norms:
            t.running_mean.copy_(o.running_mean)
            t.running_var.copy_(o.running_var)
    params = [p for p in model.parameters() if p.requires_grad]
    ready, shared = threading.Event(), {}

    def grads(loss):
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            return [None] * len(params)
        return torch.autograd.grad(loss / cfg.grad_accum, params, allow_unused=True)

    def clean():
        try:
            pred = model(backbone.normalise(low), z_low)
            shared["pred"] = pred.detach()
        finally:
            ready.set()
        terms = _clean_terms(pred, weights, z_low, crop_t, boxes, z_high)
        return terms, grads(sum(weights[k] * v for k, v in terms.items()))

    def augmented():
        image = backbone.normalise(photometric_augment(low, generator) if cfg.augment else low)
        pred_aug = twin(image, z_low)
        ready.wait()
        if "pred" not in shared:
            raise RuntimeError("the clean pass failed")
        term = losses.consistency_loss(pred_aug.float(), shared["pred"].float())
        return {"consistency": term}, grads(weights["consistency"] * term)

    pool = _pass_pool(max(1, torch.get_num_threads() // 2))
    jobs = [pool.submit(clean), pool.submit(augmented)]
    (terms, g_clean), (term_aug, g_aug) = [job.result() for job in jobs]
    with torch.no_grad():
        for (o, t), (mean0, var0) in zip(norms, before):
            keep = 1.0 - o.momentum
            o.running_mean.mul_(keep).add_(t.running_mean).sub_(mean0, alpha=keep)
            o.running_var.mul_(keep).add_(t.running_var).sub_(var0, alpha=keep)
            o.num_batches_tracked.add_(1)
        for p, a, b in zip(params, g_clean, g_aug):
            if a is None and b is None:
                continue
            total = a if b is None else (b if a is None else a + b)
            p.grad = total if p.grad is None else p.grad.add_(total)
    return {**terms, **term_aug}


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
    model = build_model(cfg, backbone, device)
    if ddp.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    sources = [TargetSource(images, backbone, cfg, device, high_res=r) for r in cfg.scales()]

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

    if cfg.cache_targets is not None:
        # every rank fills its share of the cache, then all wait for the others
        for targets in sources:
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
    recent: list[torch.Tensor] = []
    saved_step = None

    def metadata(final: bool) -> dict:
        last = torch.stack(recent[-50:]).mean(0).tolist() if recent else [float("nan")] * (1 + len(LOSS_NAMES))
        return {
            "backbone": cfg.backbone, "dim": backbone.dim, "patch_size": backbone.patch_size,
            "operator": cfg.operator, "residual": cfg.residual, "steps": step, "finished": final,
            "data": {"folders": [str(d) for d in cfg.data], "num_images": len(images),
                     "skipped_unreadable": len(getattr(images, "skipped", []))},
            "final_losses": dict(zip(("total",) + LOSS_NAMES, last)), "wall_time_s": round(elapsed, 1),
            "code_version": {"wrcup": __version__, "git": _git_revision()}, "config": asdict(cfg),
        }

    def save(final: bool) -> None:
        nonlocal saved_step
        saved_step = step
        if not is_main:
            return
        meta = metadata(final)
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
        targets = sources[scale_index(step, cfg)]
        parts = train_step(ddp_model, backbone, targets, optimizer, scheduler, cfg, step, idx, first, micro)
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
        if cfg.keep_every and step % cfg.keep_every == 0 and is_main:
            save_checkpoint(out / f"step-{step:06d}.safetensors", model.state_dict(), metadata(step >= cfg.steps))
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
