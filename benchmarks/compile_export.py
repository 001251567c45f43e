"""torch.compile and the export path of the upsampler, against eager PyTorch, on CPU (interleaved medians).

    python benchmarks/compile_export.py [--threads 2] [--repeats 7] [--onnx] [--quick]

Measures, in one process with the same inputs, alternating the two sides of every ratio:
- compile: ``torch.compile(model.upsampler, fullgraph=True)`` (inductor) against eager, the shipped model as
  ``wrcup.load()`` serves it (BatchNorm folded), 448 input: 384×32×32 features; plus the compile time;
- matmul DFT: the closed-form operators (wrc-reference, wrc-aligned, converse2d) with the DFT as real matrix
  products (``wrcup.ops._matmul_dft``, what the ONNX export runs) against the FFT path, per layer at 208×32² and
  384×64² (the network's operator width at 448 and 896) and for the whole upsampler at 448;
- ``--onnx``: the exported upsampler in onnxruntime against eager PyTorch at 448 (exporting takes a minute or two).
Writes benchmarks/results/compile_export.json (not with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/ops.py

from _common import cpu_model  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def interleaved_ms(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median ms of each callable in ``fns``, calling them in turn ``repeats`` times (after ``warmup`` rounds)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _network_inputs(model, size: int, batch: int = 1):
    image = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features = model.backbone(image).clone()
    return model.backbone.normalise(image), features


def bench_compile(model, size: int, repeats: int, backend: str) -> dict:
    up = model.upsampler
    image, features = _network_inputs(model, size)
    torch._dynamo.reset()
    compiled = torch.compile(up, fullgraph=True, backend=backend)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = compiled(image, features)
    compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        ref = up(image, features)
        ms = interleaved_ms({"eager": lambda: up(image, features), "compiled": lambda: compiled(image, features)},
                            repeats)
    return {"input": size, "features": list(features.shape), "backend": backend, "compile_s": round(compile_s, 1),
            "eager_ms": ms["eager"], "compiled_ms": ms["compiled"], "compiled_over_eager": ms["compiled"] / ms["eager"],
            "max_rel_diff": float((out - ref).abs().max() / ref.abs().max())}


def bench_matmul_dft(sizes, model, net_size: int, repeats: int) -> list:
    from wrcup.nn import create_operator
    from wrcup.ops._matmul_dft import matmul_dft

    def both(fn):
        def mm():
            with matmul_dft():
                return fn()
        return {"fft": fn, "matmul": mm}

    rows = []
    with torch.inference_mode():
        for name in ("wrc-reference", "wrc-aligned", "converse2d"):
            for C, n in sizes:
                torch.manual_seed(0)
                op = create_operator(name, C).eval()
                x = torch.randn(1, C, n, n)
                ms = interleaved_ms(both(lambda: op(x)), repeats)
                rows.append({"what": f"layer {name}", "size": f"1×{C}×{n}×{n}", **_ratio(ms)})
        image, features = _network_inputs(model, net_size)
        up = model.upsampler
        ms = interleaved_ms(both(lambda: up(image, features)), repeats)
        rows.append({"what": "upsampler (wrc-reference, folded BN)", "size": f"{net_size}×{net_size} input", **_ratio(ms)})
    return rows


def _ratio(ms: dict) -> dict:
    return {"fft_ms": ms["fft"], "matmul_ms": ms["matmul"], "matmul_over_fft": ms["matmul"] / ms["fft"]}


def bench_onnx(model, size: int, repeats: int) -> dict:
    import onnxruntime as ort

    from wrcup.models.export import export_onnx

    image, features = _network_inputs(model, size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "up.onnx", upsampler_only=True)
        export_s = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"image": image.numpy(), "features": features.numpy()}
    with torch.inference_mode():
        ms = interleaved_ms({"torch": lambda: model.upsampler(image, features),
                             "onnxruntime": lambda: session.run(None, feeds)}, repeats)
    return {"input": size, "export_s": round(export_s, 1), "torch_ms": ms["torch"], "onnxruntime_ms": ms["onnxruntime"],
            "onnxruntime_over_torch": ms["onnxruntime"] / ms["torch"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--onnx", action="store_true", help="also time the exported upsampler in onnxruntime")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat, dynamo-only compile (smoke run)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "compile_export.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import wrcup

    model = wrcup.load()
    size = 56 if args.quick else 448
    repeats = 1 if args.quick else args.repeats
    result = {"machine": cpu_model(), "threads": args.threads, "date": str(date.today()), "torch": torch.__version__,
              "repeats": repeats, "load_average": os.getloadavg()[0]}
    result["compile"] = bench_compile(model, size, repeats, backend="aot_eager" if args.quick else "inductor")
    sizes = [(8, 8)] if args.quick else [(208, 32), (384, 64)]
    result["matmul_dft"] = bench_matmul_dft(sizes, model, size, repeats)
    if args.onnx:
        result["onnx"] = bench_onnx(model, size, repeats)
    result["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
