"""Device check: speed and peak memory of every operator and upsampler network, and a short bf16 training run.

    python benchmarks/device_check.py [--out device_check.json] [--data IMAGES --cache TARGETS] [--steps 200]

On CUDA (the full check, a few minutes on one GPU):
- every registered operator (``wrcup.nn.list_operators()``) on 384-channel features at the grids of 448 and 896
  inputs (32×32 and 64×64), batch 1 and 4: forward (no grad) and forward+backward (gradients wrt the input and every
  parameter), median ms (CUDA events) and peak memory above the inputs (``torch.cuda.max_memory_allocated``);
- the upsampler network around every operator (dim 384, patch 14; image 448×448 / 896×896) the same way, forward in
  eval mode, forward+backward in training mode in float32 and under ``torch.autocast(bfloat16)`` (how the trainer runs
  on CUDA), plus the shipped upsampler as ``wrcup.load()`` serves it (BatchNorm folded), forward;
- ``--steps`` (200) training steps of the shipped checkpoint's recipe (its stored config: batch 4, 4 crops, its
  high-res sizes 448 and 896 in its 3:1 mix, its losses; bf16 autocast on CUDA) with cached backbone targets: of
  ``--data`` (an image folder) cached in ``--cache`` (reused if already filled), else of 16 synthetic images cached
  in a temporary folder; the cache is filled before the clock starts. Median step time (steps after the first 10;
  also for each high-res size), steps/s, peak memory.
On CPU the same code runs a tiny version (8 channels, a 4×4 grid, batch 2, a 16-channel network on 56×56 images,
2 training steps at 112 with 4 synthetic images, float32, no memory figures): the test suite's smoke run.
Writes JSON (``--out``, atomically, after every section); a measurement that fails (e.g. out of memory) is recorded
with its error and the run goes on.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/ops.py

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Plan:
    channels: int
    grids: tuple
    batches: tuple
    net_dim: int
    warmup: int
    repeats: int
    train_steps: int
    train_high_res: int | None  # None: the recipe's sizes and their mix
    train_batch: int | None  # None: the recipe's
    train_crops: int | None
    synthetic_images: int


FULL = Plan(channels=384, grids=(32, 64), batches=(1, 4), net_dim=384, warmup=3, repeats=10, train_steps=200,
            train_high_res=None, train_batch=None, train_crops=None, synthetic_images=16)
TINY = Plan(channels=8, grids=(4,), batches=(2,), net_dim=16, warmup=1, repeats=1, train_steps=2,
            train_high_res=112, train_batch=2, train_crops=2, synthetic_images=4)


class Meter:
    """Median time (ms) and peak memory (MiB above what was allocated before; None on CPU) of a callable."""

    def __init__(self, device: torch.device, warmup: int, repeats: int):
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> dict:
        try:
            for _ in range(self.warmup):
                fn()
            times = []
            peak = None
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            for _ in range(self.repeats):
                if self.cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end))
                else:
                    t0 = time.perf_counter()
                    fn()
                    times.append((time.perf_counter() - t0) * 1e3)
            if self.cuda:
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            return {"ms": statistics.median(times), "peak_mib": peak}
        except torch.cuda.OutOfMemoryError as err:
            return {"error": f"out of memory: {str(err).splitlines()[0]}"}
        except RuntimeError as err:
            return {"error": str(err).splitlines()[0][:300]}
        finally:
            if self.cuda:
                torch.cuda.empty_cache()


def _fwd_bwd(module, inputs: tuple, out_grad_shape, device, autocast: bool = False):
    """forward (no grad) and forward+backward closures; backward gives gradients wrt the inputs and parameters."""
    grad = torch.randn(out_grad_shape, device=device)
    leaves = tuple(t.detach().clone().requires_grad_() for t in inputs)

    def forward():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return module(*inputs)

    def forward_backward():
        module.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = module(*leaves)
        out.float().backward(grad)

    return forward, forward_backward


def bench_operators(plan: Plan, meter: Meter, device) -> list:
    from wrcup.nn import create_operator, list_operators

    rows = []
    for name in list_operators():
        for grid in plan.grids:
            for batch in plan.batches:
                torch.manual_seed(0)
                op = create_operator(name, plan.channels).to(device)
                x = torch.randn(batch, plan.channels, grid, grid, device=device)
                fwd, fwd_bwd = _fwd_bwd(op, (x,), (batch, plan.channels, 2 * grid, 2 * grid), device)
                rows.append({"operator": name, "features": [batch, plan.channels, grid, grid],
                             "forward": meter(fwd), "forward_backward": meter(fwd_bwd)})
                print(f"operator {name} {batch}×{plan.channels}×{grid}²: {rows[-1]}", flush=True)
    return rows


def bench_networks(plan: Plan, meter: Meter, device, served: bool) -> list:
    import wrcup
    from wrcup.models.upsampler import build_upsampler
    from wrcup.nn import list_operators

    rows = []
    served = wrcup.load(device=device).upsampler if served else None
    for name in list_operators() + (["served"] if served is not None else []):
        for grid in plan.grids:
            for batch in plan.batches:
                torch.manual_seed(0)
                net = served if name == "served" else build_upsampler(name, plan.net_dim, 14).to(device)
                image = torch.randn(batch, 3, 14 * grid, 14 * grid, device=device)
                feats = torch.randn(batch, plan.net_dim, grid, grid, device=device)
                shape = (batch, plan.net_dim, 2 * grid, 2 * grid)
                row = {"network": name, "input": 14 * grid, "features": list(feats.shape)}
                net.eval()
                row["forward"] = meter(_fwd_bwd(net, (image, feats), shape, device)[0])
                if name != "served":
                    net.train()
                    row["forward_backward"] = meter(_fwd_bwd(net, (image, feats), shape, device)[1])
                    row["forward_backward_bf16_autocast"] = meter(
                        _fwd_bwd(net, (image, feats), shape, device, autocast=True)[1])
                rows.append(row)
                print(f"network {name} {batch}×{14 * grid}²: {row}", flush=True)
    return rows


def _synthetic_images(folder: Path, count: int, size: int) -> None:
    """``count`` smooth random RGB images (low-frequency noise upsampled bicubically), PNG."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = torch.rand(1, 3, 8, 8, generator=g)
        image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        pixels = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"synthetic_{i:03d}.png")


def bench_training(plan: Plan, device, data: str | None, cache: str | None) -> dict:
    from wrcup import backbones
    from wrcup.models.bundle import checkpoint_path
    from wrcup.models.checkpoint import read_metadata
    from wrcup.models.names import DEFAULT_CHECKPOINT
    from wrcup.train.trainer import ImagePool, TargetSource, TrainConfig, scale_index, train

    recipe = read_metadata(checkpoint_path(DEFAULT_CHECKPOINT))["config"]
    sizes = {} if plan.train_high_res is None else {"high_res": plan.train_high_res, "scale_mix": None}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = data is None
        data = str(tmp / "images") if synthetic else data
        cfg = TrainConfig.from_dict({**recipe, "data": [data], "out": str(tmp / "run"), "steps": plan.train_steps,
                                     "cache_targets": cache or str(tmp / "cache"), "device": device.type,
                                     "checkpoint_every": 0, "progress": False, **sizes,
                                     "warmup": min(recipe.get("warmup", 0), plan.train_steps // 4)})
        if synthetic:
            _synthetic_images(Path(data), plan.synthetic_images, max(cfg.scales()))
        if plan.train_batch is not None:
            cfg.batch_size = plan.train_batch
        if plan.train_crops is not None:
            cfg.crops = plan.train_crops
        images = ImagePool(cfg.data)
        backbone = backbones.load(cfg.backbone, device=device)
        t0 = time.perf_counter()
        TargetSource(images, backbone, cfg, device).fill_cache(list(range(len(images))), show_progress=False)
        fill_s = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        summary = train(cfg, images=images, backbone=backbone)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else None
        with (tmp / "run" / "log.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        step_ms = [1e3 * cfg.batch_size / float(r["images_per_s"]) for r in rows]
        first = 10 if len(step_ms) > 20 else 0  # the steps timed as steady
        steady = step_ms[first:]
        scales = cfg.scales()
        by_size = {}  # steps on the 896 view cost more than those on the 448 view: a median for each
        for row, ms in zip(rows[first:], steady):
            by_size.setdefault(str(scales[scale_index(int(row["step"]), cfg)]), []).append(ms)
        return {"checkpoint": DEFAULT_CHECKPOINT, "steps": summary["steps"], "batch_size": cfg.batch_size,
                "high_res": cfg.high_res, "scale_mix": cfg.scale_mix, "crops": cfg.crops,
                "losses": {k: v for k, v in cfg.loss_weights.items() if v}, "operator": cfg.operator,
                "residual": cfg.residual, "bf16_autocast": device.type == "cuda", "images": len(images),
                "data": "synthetic" if synthetic else data, "cache_fill_s": round(fill_s, 2),
                "median_step_ms": statistics.median(steady), "first_step_ms": step_ms[0],
                "median_step_ms_by_high_res": {k: statistics.median(v) for k, v in by_size.items()},
                "steps_per_s": summary["steps"] / max(summary["wall_time_s"], 1e-9), "peak_mib": peak,
                "final_losses": summary["final_losses"]}


def _environment(device) -> dict:
    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
           "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    try:
        env["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=REPO, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git"] = None
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "device_check.json"))
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny version even on CUDA")
    ap.add_argument("--data", default=None, help="training images (default: synthetic)")
    ap.add_argument("--cache", default=None, help="target cache folder for --data (filled if empty)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 200; 2 in the tiny version)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: operators,networks,training")
    args = ap.parse_args(argv)
    from wrcup._io import write_json

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan = TINY if (args.tiny or device.type != "cuda") else FULL
    full = plan is FULL
    if args.steps is not None:
        plan = replace(plan, train_steps=args.steps)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    meter = Meter(device, plan.warmup, plan.repeats)
    result = {"environment": _environment(device), "plan": "full" if full else "tiny"}
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sections = {"operators": lambda: bench_operators(plan, meter, device),
                "networks": lambda: bench_networks(plan, meter, device, served=full),
                "training": lambda: bench_training(plan, device, args.data, args.cache)}
    for name, run in sections.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        result[name] = run()
        result.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
        write_json(args.out, result)  # finished sections survive a later failure
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
