"""A full-resolution crop of two ``--to-image`` feature files side by side (e.g. ``--final-step guided`` and
``bilinear``): the photo, and each file's features in one shared 3-component PCA, so that the two are coloured alike.

    wrcup upsample PHOTO --to-image --out A            # guided (the default)
    wrcup upsample PHOTO --to-image --final-step bilinear --out B
    python scripts/compare_final_step.py PHOTO A/NAME.npy B/NAME.npy --box X0 Y0 SIDE --out crop.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def pca_rgb(crops: list[np.ndarray]) -> list[np.ndarray]:
    """C×h×w crops → h×w×3 images in [0, 1] from the first three principal components of all their pixels."""
    pixels = torch.cat([torch.from_numpy(c.astype(np.float32)).flatten(1).T for c in crops])
    mean = pixels.mean(0)
    _, _, v = torch.pca_lowrank(pixels - mean, q=3, center=False)
    projected = [(torch.from_numpy(c.astype(np.float32)).flatten(1).T - mean) @ v for c in crops]
    allp = torch.cat(projected)
    lo, hi = allp.quantile(0.01, dim=0), allp.quantile(0.99, dim=0)
    return [((p - lo) / (hi - lo)).clamp(0, 1).reshape(*c.shape[1:], 3).numpy() for p, c in zip(projected, crops)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("photo")
    ap.add_argument("features", nargs="+", help="C×H×W float16 .npy files written by --to-image")
    ap.add_argument("--labels", nargs="+", default=None, help="one title per file (default: the folder names)")
    ap.add_argument("--box", nargs=3, type=int, metavar=("X0", "Y0", "SIDE"), required=True,
                    help="the crop, in feature pixels")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wrcup.data.images import load_image

    maps = [np.load(p, mmap_mode="r") for p in args.features]
    shapes = {m.shape[1:] for m in maps}
    if len(shapes) != 1:
        print(f"error: the feature files have different sizes {sorted(shapes)}", file=sys.stderr)
        return 2
    H, W = shapes.pop()
    x0, y0, side = args.box
    if not (0 <= x0 and 0 <= y0 and side > 0 and x0 + side <= W and y0 + side <= H):
        print(f"error: --box {x0} {y0} {side} does not fit in the features' {W}×{H}", file=sys.stderr)
        return 2
    photo = F.interpolate(load_image(args.photo)[None], size=(H, W), mode="bilinear", align_corners=False,
                          antialias=True)[0, :, y0:y0 + side, x0:x0 + side].permute(1, 2, 0).clamp(0, 1).numpy()
    crops = [np.asarray(m[:, y0:y0 + side, x0:x0 + side]) for m in maps]
    labels = args.labels or [Path(p).parent.name for p in args.features]
    fig, axes = plt.subplots(1, 1 + len(crops), figsize=(4 * (1 + len(crops)), 4.3))
    for ax, img, title in zip(axes, [photo, *pca_rgb(crops)], [f"photo (crop {side}×{side} at {x0},{y0})", *labels]):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
