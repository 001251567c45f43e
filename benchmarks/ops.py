"""Operator benchmark: speed and peak memory of every upsampling operator module on CPU.

    python benchmarks/ops.py            # full run (a few minutes on 2 threads), writes benchmarks/results/ops.json
    python benchmarks/ops.py --quick    # tiny sizes, 1 repeat: a smoke run for the tests

Measures, per feature size B×C×h×w (scale 2, the WRC layer's padding 2):
- forward (no grad) and forward+backward (grad wrt input and parameters) medians, in ms, for each registered
  operator (wrc-reference, wrc-aligned, wrc-exact, converse2d, transposed, bilinear);
- beside them: one rfft2/irfft2 round trip of the padded high-res map, the layer's two 3×3 weight convolutions,
  and their sum (the "floor" of the WRC layer);
- the baseline: the authors' formula transcribed with full complex FFTs (tests/ops/oracles.py, float32), as a
  whole layer and as the solve alone (given weights), next to the reference closed form alone;
- peak memory (resident-set high-water mark over a fresh subprocess's baseline) at a larger size;
- exact mode's PCG iterations and time at tol 1e-4 (float32) and 1e-8 (float64).
Prints Markdown tables and writes JSON.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from _common import cpu_model, median_ms  # noqa: E402  (benchmarks/ is the script's folder)

# Sleeping rather than spinning OpenMP workers: on a shared, oversubscribed machine the default (spinning)
# made every parallel region wait for a scheduler slice, measured 10× slower at 2 threads. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "ops"))
from oracles import spec_layer, spec_transcription  # noqa: E402

from wrcup.nn import create_operator  # noqa: E402
from wrcup.ops import wrc_closed_form  # noqa: E402

OPERATORS = ["wrc-reference", "wrc-aligned", "wrc-exact", "converse2d", "transposed", "bilinear"]
FULL_SIZES = [(1, 208, 32, 32), (1, 384, 32, 32), (1, 384, 64, 64)]
QUICK_SIZES = [(1, 8, 8, 8)]
SCALE, PADDING = 2, 2


def operator_fns(name: str, size, seed: int = 0):
    """(forward, forward+backward) closures for the operator ``name`` at ``size``."""
    torch.manual_seed(seed)
    B, C, h, w = size
    op = create_operator(name, C, scale=SCALE)
    x = torch.randn(B, C, h, w)
    xg = x.clone().requires_grad_()
    g = torch.randn(B, C, SCALE * h, SCALE * w)

    def fwd():
        with torch.no_grad():
            op(x)

    def fwd_bwd():
        op.zero_grad(set_to_none=True)
        xg.grad = None
        op(xg).backward(g)

    return fwd, fwd_bwd, op


def transcription_fns(size, seed: int = 0):
    """The authors' layer with the full-complex-FFT transcription, on the parameters of a WRC module."""
    _, _, op = operator_fns("wrc-reference", size, seed)
    B, C, h, w = size
    x = torch.randn(B, C, h, w)
    xg = x.clone().requires_grad_()
    g = torch.randn(B, C, SCALE * h, SCALE * w)
    params = [op.weight, op.bias, op.w_conv_low.weight, op.w_conv_high.weight]

    def run(inp):
        return spec_layer(inp, *params, SCALE, PADDING, "circular", op.eps, "reference")

    def fwd():
        with torch.no_grad():
            run(x)

    def fwd_bwd():
        op.zero_grad(set_to_none=True)
        xg.grad = None
        run(xg).backward(g)

    return fwd, fwd_bwd


def solve_fns(size, seed: int = 0):
    """The closed form alone (weights given) and its transcription, forward and forward+backward."""
    gen = torch.Generator().manual_seed(seed)
    B, C, h, w = size
    hp, wp = h + 2 * PADDING, w + 2 * PADDING
    H, W = SCALE * hp, SCALE * wp
    tensors = [
        torch.randn(B, C, hp, wp, generator=gen),
        torch.softmax(torch.randn(C, 4, generator=gen), -1).reshape(C, 2, 2),
        torch.rand(1, C, 1, 1, generator=gen) + 0.5,
        torch.rand(B, C, hp, wp, generator=gen),
        torch.rand(B, C, H, W, generator=gen),
        torch.randn(B, C, H, W, generator=gen),
    ]
    grads = [t.clone().requires_grad_() for t in tensors]
    g = torch.randn(B, C, H, W, generator=gen)

    def make(fn):
        def fwd():
            with torch.no_grad():
                fn(*tensors)

        def fwd_bwd():
            for t in grads:
                t.grad = None
            fn(*grads).backward(g)

        return fwd, fwd_bwd

    closed = make(lambda y, k, lam, wl, wh, pr: wrc_closed_form(y, k, lam, wl, wh, SCALE, pr, mode="reference"))
    spec = make(lambda y, k, lam, wl, wh, pr: spec_transcription(y, k, lam, wl, wh, SCALE, pr, "reference"))
    return closed, spec


def floor_fns(size, seed: int = 0):
    """One rfft2/irfft2 round trip of the padded high-res map; the two 3×3 weight convolutions."""
    torch.manual_seed(seed)
    B, C, h, w = size
    hp, wp = h + 2 * PADDING, w + 2 * PADDING
    y = torch.randn(B, C, hp, wp)
    xh = torch.randn(B, C, SCALE * hp, SCALE * wp)
    w_low, w_high = torch.randn(C, C, 3, 3) * 0.05, torch.randn(C, C, 3, 3) * 0.05

    def fft_round_trip():
        with torch.no_grad():
            torch.fft.irfft2(torch.fft.rfft2(xh), s=xh.shape[-2:])

    def convs():
        with torch.no_grad():
            F.conv2d(y, w_low, padding=1)
            F.conv2d(xh, w_high, padding=1)

    return fft_round_trip, convs


def exact_stats(size, quick: bool) -> list[dict]:
    """PCG iterations and time of the exact solve on a WRC layer's weights (random init, random input)."""
    from wrcup.ops.exact import wrc_exact_solve
    from wrcup.ops.layer import _pad, _weight_map

    torch.manual_seed(0)
    B, C, h, w = size
    op = create_operator("wrc-exact", C, scale=SCALE)
    rows = []
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-8)):
        with torch.no_grad():
            x = torch.randn(B, C, h, w, dtype=dtype)
            y = _pad(x, PADDING, "circular")
            w_low = _weight_map(y, op.w_conv_low.weight.to(dtype), False)
            prior = F.interpolate(y, scale_factor=SCALE, mode="bilinear", align_corners=True)
            w_high = _weight_map(prior, op.w_conv_high.weight.to(dtype), False)
            lam = F.softplus(op.bias.to(dtype)) + op.eps
            kernel = op.weight.to(dtype)

            def solve():
                return wrc_exact_solve(y, kernel, lam, w_low, w_high, SCALE, prior, tol=tol, return_info=True)

            ms = median_ms(solve, 1 if quick else 3)
            _, info = solve()
        rows.append({
            "dtype": str(dtype).replace("torch.", ""), "tol": tol, "size": list(size), "iterations": int(info.iterations),
            "residual": float(info.residual), "converged": bool(info.converged), "ms": round(ms, 2),
        })
    return rows


# ------------------------------------------------------------------------------------------- peak memory
def _memory_child(name: str, size, backward: bool, threads: int) -> None:
    """Runs in a fresh interpreter: prints the RSS high-water mark increase (MiB) of one call (Linux /proc).

    A call at a tiny size first loads the libraries and kernels the operator touches, so that the baseline
    (read after building the real-size inputs) holds everything but the call's own working memory.
    """
    torch.set_num_threads(threads)

    def fns(sz):
        if name == "transcription":
            return transcription_fns(sz)
        return operator_fns(name, sz)[:2]

    warm = fns((1, size[1], 4, 4))
    (warm[1] if backward else warm[0])()
    fwd, fwd_bwd = fns(size)
    rss_before = _rss_bytes("VmRSS")
    try:  # reset the high-water mark to the current RSS (Linux ≥ 4.0), so it holds this call's peak only
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    (fwd_bwd if backward else fwd)()
    peak = _rss_bytes("VmHWM")
    print(json.dumps({"peak_mib": round(max(peak - rss_before, 0) / 2**20, 1)}))


def _rss_bytes(field: str) -> int:
    """VmRSS (current) or VmHWM (high-water mark) of this process. Unlike getrusage's ru_maxrss, VmHWM is not
    inherited from the parent process across fork/exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory(name: str, size, backward: bool, threads: int) -> float | None:
    cmd = [sys.executable, __file__, "--memory-child", name, ",".join(map(str, size)), "--threads", str(threads)]
    cmd += ["--backward"] if backward else []
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        print(f"memory probe for {name} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]


# ------------------------------------------------------------------------------------------- main
def run(quick: bool, out: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    sizes = QUICK_SIZES if quick else FULL_SIZES
    mem_size = (1, 8, 16, 16) if quick else (1, 384, 128, 128)
    print(f"threads {threads}; sizes {sizes}; memory at {mem_size}", file=sys.stderr, flush=True)
    operators = list(OPERATORS)
    result = {
        "machine": {
            "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "load_average_start": list(os.getloadavg()),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "scale": SCALE,
        "padding": PADDING,
        "sizes": [],
        "memory": {"size": list(mem_size), "rows": []},
    }
    for size in sizes:
        large = size[1] * size[2] * size[3] >= 384 * 64 * 64
        reps_f, reps_fb = (1, 1) if quick else ((5, 3) if large else (7, 5))
        entry = {"size": list(size), "operators": {}, "repeats": [reps_f, reps_fb]}
        fft_fn, conv_fn = floor_fns(size)
        entry["fft_round_trip_ms"] = median_ms(fft_fn, reps_f)
        entry["weight_convs_ms"] = median_ms(conv_fn, reps_f)
        entry["floor_ms"] = entry["fft_round_trip_ms"] + entry["weight_convs_ms"]
        for name in operators:
            fwd, fwd_bwd, _ = operator_fns(name, size)
            entry["operators"][name] = {"forward_ms": median_ms(fwd, reps_f), "forward_backward_ms": median_ms(fwd_bwd, reps_fb)}
        fwd, fwd_bwd = transcription_fns(size)
        entry["transcription_layer"] = {"forward_ms": median_ms(fwd, reps_f), "forward_backward_ms": median_ms(fwd_bwd, reps_fb)}
        (c_f, c_fb), (s_f, s_fb) = solve_fns(size)
        entry["solve_reference"] = {"forward_ms": median_ms(c_f, reps_f), "forward_backward_ms": median_ms(c_fb, reps_fb)}
        entry["solve_transcription"] = {"forward_ms": median_ms(s_f, reps_f), "forward_backward_ms": median_ms(s_fb, reps_fb)}
        ref = entry["operators"]["wrc-reference"]
        entry["ratios"] = {
            "transcription_layer_over_reference_forward": entry["transcription_layer"]["forward_ms"] / ref["forward_ms"],
            "transcription_layer_over_reference_forward_backward":
                entry["transcription_layer"]["forward_backward_ms"] / ref["forward_backward_ms"],
            "transcription_solve_over_reference_solve_forward":
                entry["solve_transcription"]["forward_ms"] / entry["solve_reference"]["forward_ms"],
            "transcription_solve_over_reference_solve_forward_backward":
                entry["solve_transcription"]["forward_backward_ms"] / entry["solve_reference"]["forward_backward_ms"],
            "reference_forward_over_floor": ref["forward_ms"] / entry["floor_ms"],
        }
        result["sizes"].append(entry)
        print(f"done {size}", file=sys.stderr, flush=True)

    mem_ops = ["wrc-reference"] if quick else operators + ["transcription"]
    for name in mem_ops:
        result["memory"]["rows"].append({
            "operator": name,
            "forward_mib": peak_memory(name, mem_size, False, threads),
            "forward_backward_mib": peak_memory(name, mem_size, True, threads),
        })
    result["exact"] = exact_stats(sizes[0], quick)

    result["machine"]["load_average_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['threads']} threads, torch {m['torch']}; {result['date']}; "
        f"load average {m['load_average_start'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end"
        + (" (quick smoke run)" if result["quick"] else ""),
        "",
    ]
    for entry in result["sizes"]:
        B, C, h, w = entry["size"]
        lines += [
            f"**{B}×{C}×{h}×{w} → ×{result['scale']}** (padding {result['padding']}; medians of "
            f"{entry['repeats'][0]} / {entry['repeats'][1]} runs)",
            "",
            "| operator | forward (ms) | forward+backward (ms) | forward / floor |",
            "|---|---:|---:|---:|",
        ]
        floor = entry["floor_ms"]
        for name, row in entry["operators"].items():
            lines.append(f"| {name} | {row['forward_ms']:.1f} | {row['forward_backward_ms']:.1f} | {row['forward_ms'] / floor:.2f} |")
        t = entry["transcription_layer"]
        lines.append(f"| plain transcription (layer) | {t['forward_ms']:.1f} | {t['forward_backward_ms']:.1f} | {t['forward_ms'] / floor:.2f} |")
        for label, key in (("reference closed form alone", "solve_reference"), ("plain transcription alone", "solve_transcription")):
            r = entry[key]
            lines.append(f"| {label} (weights given) | {r['forward_ms']:.1f} | {r['forward_backward_ms']:.1f} | |")
        lines.append(f"| rfft2/irfft2 round trip | {entry['fft_round_trip_ms']:.1f} | | |")
        lines.append(f"| two 3×3 weight convs | {entry['weight_convs_ms']:.1f} | | |")
        lines.append(f"| floor (FFT + convs) | {floor:.1f} | | 1.00 |")
        r = entry["ratios"]
        lines += [
            "",
            f"transcription / reference: layer {r['transcription_layer_over_reference_forward']:.2f}× forward, "
            f"{r['transcription_layer_over_reference_forward_backward']:.2f}× forward+backward; solve alone "
            f"{r['transcription_solve_over_reference_solve_forward']:.2f}× forward, "
            f"{r['transcription_solve_over_reference_solve_forward_backward']:.2f}× forward+backward. "
            f"reference / floor: {r['reference_forward_over_floor']:.2f}×.",
            "",
        ]
    mem = result["memory"]
    B, C, h, w = mem["size"]
    lines += [
        f"**Peak memory at {B}×{C}×{h}×{w} → ×{result['scale']}** (RSS high-water mark over a fresh process's baseline, MiB)",
        "",
        "| operator | forward | forward+backward |",
        "|---|---:|---:|",
    ]
    for row in mem["rows"]:
        f = "n/a" if row["forward_mib"] is None else f"{row['forward_mib']:.0f}"
        fb = "n/a" if row["forward_backward_mib"] is None else f"{row['forward_backward_mib']:.0f}"
        lines.append(f"| {row['operator']} | {f} | {fb} |")
    if result["exact"]:
        lines += ["", "**Exact mode (PCG)**", "", "| size | dtype | tol | iterations | residual | time (ms) |", "|---|---|---:|---:|---:|---:|"]
        for row in result["exact"]:
            size = "×".join(map(str, row["size"]))
            lines.append(f"| {size} | {row['dtype']} | {row['tol']:g} | {row['iterations']} | {row['residual']:.1e} | {row['ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ops.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-child", nargs=2, metavar=("OPERATOR", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        name, size = args.memory_child
        _memory_child(name, tuple(int(v) for v in size.split(",")), args.backward, args.threads)
        return 0
    result = run(args.quick, args.out, args.threads)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
