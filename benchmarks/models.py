"""Upsampler network forward time at 224 and 448 input for every operator, beside the backbone's time.

Also times the same network with its WRC layer replaced by a straightforward full-complex-FFT transcription
of the authors' formula (tests/ops/oracles.py) — what the authors' pure-PyTorch network computes — so the cost
of reference compatibility can be read off one run.

    python benchmarks/models.py [--threads 2] [--repeats 7] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from _common import cpu_model, median_ms  # noqa: E402

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "ops"))


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke test)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "models.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from wrcup import backbones
    from wrcup.models import build_upsampler, fold_batchnorm

    sizes = [56] if args.quick else [224, 448]
    repeats = 1 if args.quick else args.repeats
    operators = ["bilinear", "transposed", "converse2d", "wrc-reference", "wrc-aligned", "wrc-exact"]
    backbone = backbones.load("dinov2-s14-imgfocus")
    rows = []
    with torch.inference_mode():
        for size in sizes:
            image = torch.rand(1, 3, size, size)
            feats = backbone(image)
            norm = backbone.normalise(image)
            rows.append({"size": size, "model": "backbone (dinov2-s14-imgfocus)",
                         "ms": median_ms(lambda: backbone(image), repeats, warmup=2)})
            for op in operators + ["wrc-reference+folded-bn", "wrc-transcription"]:
                base = op.split("+")[0] if "+" in op else ("wrc-reference" if op == "wrc-transcription" else op)
                net = build_upsampler(base, backbone.dim, backbone.patch_size).eval()
                if op == "wrc-transcription":
                    net.operator = TranscribedWRC(net.operator)
                if op.endswith("+folded-bn"):  # what wrcup.load serves
                    net = fold_batchnorm(net)
                rows.append({"size": size, "model": f"upsampler[{op}]", "ms": median_ms(lambda: net(norm, feats), repeats, warmup=2)})
    result = {"machine": cpu_model(), "threads": args.threads, "date": str(date.today()), "torch": torch.__version__,
              "repeats": repeats, "rows": rows}
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']}, threads {args.threads}, {result['date']}, median of {repeats}\n")
    print("| input | model | forward ms |\n|---|---|---:|")
    for r in rows:
        print(f"| {r['size']}×{r['size']} | {r['model']} | {r['ms']:.1f} |")


if __name__ == "__main__":
    main()
