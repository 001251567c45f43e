#!/usr/bin/env python
"""Learning curve of a training run: feature fidelity of every kept snapshot, against bilinear.

For each ``step-*.safetensors`` in RUN_DIR (written by ``wrcup train --keep-every N``; with ``--ema``, the
``step-*.ema.safetensors`` averages too) and for bilinear, the fidelity protocol of ``wrcup eval fidelity`` (cosine
and NMSE against the backbone's own features at twice the input size) on each named image set at each input size;
for a set whose images lie in several folders (DAVIS sequences), each cell also holds the means per folder.
Results accumulate in OUT (JSON, rewritten atomically after every cell, so an interrupted run resumes where it
stopped); a PNG plot is drawn next to it.

    python scripts/learning_curve.py RUN_DIR --set davis=DAVIS/JPEGImages/480p:10 --set heldout=VAL_DIR:1 \
        --sizes 224 448 --cache FEATURE_CACHE --out docs/results/learning-curve.json

``NAME=FOLDER:EVERY`` takes every EVERY-th image of FOLDER (sorted, searched recursively). With ``--data-root
DATA``, the JSON records a folder under DATA as ``$DATA/…`` rather than as this machine's absolute path.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def snapshots(run_dir: Path) -> list[tuple[int, str, Path]]:
    """(step, weights, path) of every ``step-<N>.safetensors`` (weights ``"trained"``) and, for a run trained with
    ``--ema``, every ``step-<N>.ema.safetensors`` (weights ``"ema"``, the moving average) in ``run_dir``, by step."""
    found = []
    for path in run_dir.glob("step-*.safetensors"):
        match = re.fullmatch(r"step-(\d+)(\.ema)?\.safetensors", path.name)
        if match:
            found.append((int(match.group(1)), "ema" if match.group(2) else "trained", path))
    return sorted(found)


def weights_of(cell: dict) -> str:
    """``"ema"`` for a cell of a moving-average snapshot, else ``"trained"`` (cells written before ``--ema``
    existed carry no ``weights`` field)."""
    return cell.get("weights", "trained")


def line_label(method: str, weights: str) -> str:
    """How the plot's legend and the progress lines name ``method`` on these weights."""
    return f"{method} (EMA)" if weights == "ema" else method


def parse_set(text: str) -> tuple[str, Path, int]:
    try:
        name, rest = text.split("=", 1)
        folder, every = rest.rsplit(":", 1) if ":" in rest else (rest, "1")
        return name, Path(folder), int(every)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set must be NAME=FOLDER[:EVERY], got {text!r}") from None


def recorded_path(path: Path, data_root: Path | None) -> str:
    """How the JSON records ``path``: ``$DATA/<relative>`` when it lies under ``data_root``, else as given."""
    if data_root is not None:
        resolved, root = path.resolve(), data_root.resolve()
        if resolved.is_relative_to(root):
            return "$DATA/" + resolved.relative_to(root).as_posix()
    return str(path)


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wrcup._io import atomic_path

    cells = result["cells"]
    series = sorted({(c["set"], c["size"]) for c in cells})
    metrics = (("cosine", "mean cosine ↑"), ("nmse", "NMSE ↓"))
    fig, axes = plt.subplots(len(metrics), len(series), figsize=(4.2 * len(series), 3.2 * len(metrics)),
                             squeeze=False)
    methods = sorted({c["method"] for c in cells} - {"bilinear"})
    colour = {m: f"C{i}" for i, m in enumerate(methods)}  # a method keeps its colour; EMA changes the line style
    for col, (name, size) in enumerate(series):
        here = [c for c in cells if c["set"] == name and c["size"] == size]
        for row, (metric, label) in enumerate(metrics):
            ax = axes[row][col]
            lines = sorted({(c["method"], weights_of(c)) for c in here if c["method"] != "bilinear"})
            for method, weights in lines:
                points = sorted((c["step"], c[metric]) for c in here
                                if c["method"] == method and weights_of(c) == weights)
                ema = weights == "ema"
                ax.plot(*zip(*points), color=colour[method], marker="s" if ema else "o",
                        linestyle="-." if ema else "-", label=line_label(method, weights))
            bilinear = [c[metric] for c in here if c["method"] == "bilinear"]
            if bilinear:
                ax.axhline(bilinear[0], color="grey", linestyle="--", label="bilinear")
            ax.set_title(f"{name}: {size} → {2 * size}")
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    # one legend for all panels, below them, so that no panel's points hide behind it
    handles, labels = {}, []
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text not in handles:
                handles[text] = handle
                labels.append(text)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend([handles[t] for t in labels], labels, loc="lower center", ncol=min(len(labels), 6), fontsize="small")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--set", dest="sets", type=parse_set, action="append", required=True,
                   help="NAME=FOLDER[:EVERY], repeatable")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448], help="input shorter sides (default 224 448)")
    p.add_argument("--cache", default=None, help="backbone feature cache folder (shared with wrcup eval)")
    p.add_argument("--out", type=Path, required=True, help="JSON result (resumed if it exists)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--methods", default="learned",
                   help="comma-separated methods that run the snapshots' upsampler, e.g. learned,learned-bilinear-norm "
                        "(default: learned); bilinear is always measured once")
    p.add_argument("--data-root", type=Path, default=None,
                   help="record set folders under this root as $DATA/... (results then name no local path)")
    args = p.parse_args(argv)

    import torch

    from wrcup._io import atomic_path
    from wrcup.data.images import list_images
    from wrcup.eval import tasks
    from wrcup.eval.extract import FeatureExtractor, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    steps = snapshots(args.run_dir)
    if not steps:
        raise SystemExit(f"error: no step-*.safetensors in {args.run_dir} (train with --keep-every N)")
    result = json.loads(args.out.read_text()) if args.out.exists() else {"run": str(args.run_dir), "cells": []}
    done = {(c["method"], weights_of(c), c["step"], c["set"], c["size"]) for c in result["cells"]}
    images = {name: sorted(list_images(folder))[::every] for name, folder, every in args.sets}
    result["sets"] = {name: {"folder": recorded_path(folder, args.data_root), "every": every, "num_images": len(images[name])}
                      for name, folder, every in args.sets}

    def save() -> None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")

    # bilinear once (step None), then every snapshot in step order
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    jobs = [("bilinear", "trained", None, steps[0][2])] + [(m, weights, step, path) for step, weights, path in steps
                                                             for m in methods]
    for method, weights, step, path in jobs:
        todo = [(n, s) for n in images for s in args.sizes if (method, weights, step, n, s) not in done]
        if not todo:
            continue
        backbone, upsampler, _ = load_model(str(path), method)
        extractor = FeatureExtractor(backbone, upsampler, method, cache_dir=args.cache)
        for name, size in todo:
            cell = tasks.fidelity(extractor, images[name], size=size, progress=sys.stderr.isatty())
            row = {"method": method, "step": step, "set": name, "size": size, "cosine": cell["cosine"],
                   "nmse": cell["nmse"], "norm_ratio": cell["norm_ratio"], "num_images": cell["num_images"]}
            if weights == "ema":  # cells without the field are the trained weights, as before --ema existed
                row["weights"] = "ema"
            if "per_folder" in cell:  # e.g. DAVIS sequences: which of them move the mean
                row["per_folder"] = {folder: {k: means[k] for k in ("cosine", "nmse", "num_images")}
                                     for folder, means in cell["per_folder"].items()}
            result["cells"].append(row)
            save()
            print(f"{line_label(method, weights):27s} step {step!s:>6} {name:8s} {size}->{2 * size}: cosine {cell['cosine']:.4f} "
                  f"nmse {cell['nmse']:.4f} norm ratio {cell['norm_ratio']:.3f}", flush=True)
    save()
    plot(result, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
