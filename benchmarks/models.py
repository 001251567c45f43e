"""Upsampler network forward time for every operator, beside the backbone's time, interleaved in one process.

Rows per input size (batch 1, gradients off, as served):
- ``backbone (dinov2-s14-imgfocus)``;
- ``upsampler[<operator>]`` for each operator: the 2× network in its training layout (BatchNorm not folded);
- ``upsampler[<operator>+folded-bn]``: what ``wrcup.load()`` serves, with the default checkpoint's operator
  (residual, BatchNorm folded, hence the fused oneDNN inference convolutions and the factored high-res weight
  convolution);
- ``upsampler[<operator>+folded-bn, unfused]``: the same network through the plain modules with the direct
  high-res convolution (the served path before the fused inference convolutions);
- ``upsampler[wrc-transcription]``: the training-layout network with its WRC layer replaced by a straightforward
  full-complex-FFT transcription of the authors' formula (tests/ops/oracles.py), what the authors' pure-PyTorch
  network computes.

Every model runs once per round, rounds repeated (interleaved, so load changes hit all alike); medians of wall
and process CPU time, and the served network's ratios to the backbone and to the transcription.

    python benchmarks/models.py [--threads 2] [--repeats 7] [--sizes 224,448] [--operators wrc-reference,...]
    python benchmarks/models.py --quick      # tiny sizes, 1 repeat (smoke test)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from _common import cpu_model  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/ops.py; must precede torch

import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "ops"))
OPERATORS = ["bilinear", "transposed", "converse2d", "wrc-reference", "wrc-aligned", "wrc-exact"]
TRANSCRIPTION = "wrc-transcription"


def served_operator() -> str:
    """The operator of the checkpoint ``wrcup.load()`` serves (its metadata; no weights are read)."""
    from wrcup.models.bundle import checkpoint_path
    from wrcup.models.checkpoint import read_metadata
    from wrcup.models.names import DEFAULT_CHECKPOINT

    return read_metadata(checkpoint_path(DEFAULT_CHECKPOINT))["operator"]


SERVED_OPERATOR = served_operator()
SERVED, UNFUSED = f"{SERVED_OPERATOR}+folded-bn", f"{SERVED_OPERATOR}+folded-bn, unfused"


class TranscribedWRC(nn.Module):
    """The authors' WRC layer, transcribed with full complex FFTs (the authors' algebra, their cost profile)."""

    def __init__(self, wrc):
        super().__init__()
        self.wrc = wrc

    def forward(self, x):
        from oracles import spec_layer

        w = self.wrc
        return spec_layer(x, w.weight, w.bias.flatten(), w.w_conv_low.weight, w.w_conv_high.weight,
                          s=w.scale, p=w.padding, shift="reference")


class Unfused(nn.Module):
    """Runs ``net`` with the fused inference convolutions off and the direct high-res weight convolution."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.net.operator.prior_conv = "direct"

    def forward(self, image, features):
        from wrcup.models import fuse

        saved, fuse._FUSED_CONV = fuse._FUSED_CONV, False
        try:
            return self.net(image, features)
        finally:
            fuse._FUSED_CONV = saved


def build_models(backbone, operators):
    from wrcup.models import build_upsampler, fold_batchnorm

    models = {}
    for op in operators:
        models[f"upsampler[{op}]"] = build_upsampler(op, backbone.dim, backbone.patch_size).eval()
    served = build_upsampler(SERVED_OPERATOR, backbone.dim, backbone.patch_size, residual=True).eval()
    models[f"upsampler[{SERVED}]"] = fold_batchnorm(served)  # what wrcup.load serves
    models[f"upsampler[{UNFUSED}]"] = Unfused(fold_batchnorm(served))
    transcribed = build_upsampler("wrc-reference", backbone.dim, backbone.patch_size).eval()
    transcribed.operator = TranscribedWRC(transcribed.operator)
    models[f"upsampler[{TRANSCRIPTION}]"] = transcribed
    return models


BACKBONE = "backbone (dinov2-s14-imgfocus)"
BACKBONE_BF16 = "backbone under bf16 autocast"
SERVED_BF16 = "served upsampler under bf16 autocast"


def _under_bf16_autocast(fn):
    """``fn`` called under CPU bfloat16 autocast."""
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", default="224,448", help="input sizes (multiples of 14)")
    ap.add_argument("--operators", default=",".join(OPERATORS), help="training-layout networks to time")
    ap.add_argument("--bf16", action="store_true", help="also time the backbone and the served upsampler under "
                    "torch.autocast(\"cpu\", dtype=torch.bfloat16) (pays on CPUs with bfloat16 units, e.g. Intel AMX)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke test)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "models.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from wrcup import backbones

    sizes = [56] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    operators = [op for op in args.operators.split(",") if op]
    backbone = backbones.load("dinov2-s14-imgfocus")
    load_start = os.getloadavg()
    rows, ratios = [], []
    models = build_models(backbone, operators)
    with torch.inference_mode():
        for size in sizes:
            image = torch.rand(1, 3, size, size)
            feats = backbone(image)
            norm = backbone.normalise(image)
            calls = {BACKBONE: lambda: backbone(image)}
            calls.update({name: (lambda net=net: net(norm, feats)) for name, net in models.items()})
            agreement = {}
            if args.bf16:
                calls[BACKBONE_BF16] = _under_bf16_autocast(calls[BACKBONE])
                calls[SERVED_BF16] = _under_bf16_autocast(calls[f"upsampler[{SERVED}]"])
                for name, plain in ((BACKBONE_BF16, BACKBONE), (SERVED_BF16, f"upsampler[{SERVED}]")):
                    cos = torch.nn.functional.cosine_similarity(calls[name]().float(), calls[plain]().float(), dim=1)
                    agreement[name] = {"mean_cosine_to_float32": float(cos.mean()), "min_cosine": float(cos.min())}
            wall = {name: [] for name in calls}
            cpu = {name: [] for name in calls}
            for r in range(repeats + 2):  # two untimed warm-up rounds
                for name, fn in calls.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    if r >= 2:
                        wall[name].append((time.perf_counter() - t0) * 1e3)
                        cpu[name].append((time.process_time() - c0) * 1e3)
            med = {name: statistics.median(wall[name]) for name in calls}
            for name in calls:
                rows.append({"size": size, "model": name, "ms": med[name], "cpu_ms": statistics.median(cpu[name])})
            served = med[f"upsampler[{SERVED}]"]
            ratios.append({"size": size, "served_over_backbone": served / med[BACKBONE],
                           "served_over_transcription": served / med[f"upsampler[{TRANSCRIPTION}]"],
                           "unfused_over_served": med[f"upsampler[{UNFUSED}]"] / served})
            if args.bf16:
                ratios[-1].update({"backbone_over_backbone_bf16": med[BACKBONE] / med[BACKBONE_BF16],
                                   "served_over_backbone_bf16": served / med[BACKBONE_BF16],
                                   "served_bf16_over_backbone_bf16": med[SERVED_BF16] / med[BACKBONE_BF16],
                                   "served_over_served_bf16": served / med[SERVED_BF16],
                                   "agreement": agreement})
    result = {"machine": cpu_model(), "threads": args.threads, "date": str(date.today()), "torch": torch.__version__,
              "repeats": repeats, "load_average": {"start": load_start[0], "end": os.getloadavg()[0]},
              "rows": rows, "ratios": ratios}
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']}, threads {args.threads}, {result['date']}, median of {repeats} interleaved "
          f"rounds, load average {result['load_average']['start']:.1f} → {result['load_average']['end']:.1f}\n")
    print("| input | model | forward ms | CPU ms |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['size']}×{r['size']} | {r['model']} | {r['ms']:.1f} | {r['cpu_ms']:.1f} |")
    print()
    for q in ratios:
        print(f"{q['size']}: served / backbone {q['served_over_backbone']:.3f}, served / transcription "
              f"{q['served_over_transcription']:.3f}, unfused / served {q['unfused_over_served']:.3f}")
        if "agreement" in q:
            print(f"{q['size']}: backbone / backbone under bf16 {q['backbone_over_backbone_bf16']:.2f}×, served / "
                  f"served under bf16 {q['served_over_served_bf16']:.2f}×, both under bf16: served / backbone "
                  f"{q['served_bf16_over_backbone_bf16']:.3f}; agreement with float32: "
                  + ", ".join(f"{k} mean cosine {v['mean_cosine_to_float32']:.6f} (min {v['min_cosine']:.6f})"
                              for k, v in q["agreement"].items()))


if __name__ == "__main__":
    main()
