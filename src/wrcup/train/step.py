"""One optimiser step of the training recipe (docs/DESIGN.md): the model and optimiser it updates, the clean and
augmented passes (one after the other, or overlapped in two threads on CPU), the losses and the update."""
from __future__ import annotations

import copy
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

from ..models.upsampler import build_upsampler
from . import losses
from .augment import photometric_augment
from .config import LOSS_NAMES, TrainConfig
from .targets import TargetSource, step_generator


def build_model(cfg: TrainConfig, backbone, device) -> torch.nn.Module:
    """The upsampler to train, initialised from the current RNG state; ``cfg.fast`` selects the factored
    high-res weight convolution of the WRC layers (same parameters, same function up to rounding)."""
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
    mark = mark or (lambda phase: None)
    device = next(iter(optimizer.param_groups[0]["params"])).device
    weights = cfg.loss_weight_values()
    if overlap is None:
        overlap = cfg.fast and _can_overlap(net, device, weights)
    use_amp = uses_bf16_autocast(cfg, device)
    optimizer.zero_grad(set_to_none=True)
    parts = torch.zeros(len(LOSS_NAMES), device=device)
    mark("optimizer")
    for a in range(cfg.grad_accum):
        sub = idx[a * micro:(a + 1) * micro]
        low, z_low, crop_t, boxes, z_high = targets.batch(sub, step, offset=first + a * micro)
        mark("data")
        g = step_generator(cfg.seed, step, stream=200 + (first + a * micro) // micro)
        if overlap:
            terms = _overlapped_passes(net, backbone, cfg, weights, low, z_low, crop_t, boxes, z_high, g, use_amp)
            mark("forward")
        else:
            image, image_aug = backbone.normalise(low), None
            if weights["consistency"]:
                image_aug = backbone.normalise(photometric_augment(low, g) if cfg.augment else low)
            mark("augment")
            # one autocast region per pass: each has its own bfloat16 copies of the weights, so the two passes'
            # weight gradients are added in float32 (as in the overlapped passes), not in bfloat16
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = net(image, z_low)
            pred_aug = None
            if image_aug is not None:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    pred_aug = net(image_aug, z_low)
            mark("forward")
            terms = _clean_terms(pred, weights, z_low, crop_t, boxes, z_high)  # losses in float32
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


def uses_bf16_autocast(cfg, device: torch.device) -> bool:
    """Whether the passes run under bfloat16 autocast: ``cfg.precision`` "bfloat16", or "auto" on CUDA."""
    return cfg.precision == "bfloat16" or (cfg.precision == "auto" and device.type == "cuda")


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


def _overlapped_passes(model, backbone, cfg, weights, low, z_low, crop_t, boxes, z_high, generator,
                       use_amp: bool = False) -> dict:
    """The clean and the augmented pass of one micro-batch in two threads, each with half the intra-op threads.

    Same losses and gradients as the sequential passes, in another rounding: each pass differentiates its own
    losses (clean: local/global/full; augmented: consistency against the detached clean prediction) and the
    two gradients are added in a fixed order into ``.grad``. ``use_amp``: each pass's forward under bfloat16
    autocast (autocast is per thread, so it is entered inside the workers). The augmented pass runs on a twin
    module sharing the parameters; BatchNorm running statistics are merged as if the clean pass had updated them first:
    r ← (1 − m)·r_clean + (r_aug − (1 − m)·r_before). Deterministic for a given thread count.
    """
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
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_amp):
                pred = model(backbone.normalise(low), z_low)
            shared["pred"] = pred.detach()
        finally:
            ready.set()
        terms = _clean_terms(pred, weights, z_low, crop_t, boxes, z_high)
        return terms, grads(sum(weights[k] * v for k, v in terms.items()))

    def augmented():
        image = backbone.normalise(photometric_augment(low, generator) if cfg.augment else low)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_amp):
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
