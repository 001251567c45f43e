"""``wrcup upsample --to-image``: features at the photo's own resolution (long side capped by ``--max-side``), streamed
into a float16 ``.npy`` by :func:`wrcup.models.to_image.write_features_npy`, with the picture of a reduced copy.
The rest of the job (flags, inputs, outputs, the per-image loop) is :mod:`wrcup.cli.upsample`'s.
"""
from __future__ import annotations

import os

# --to-image: the long side of the features written (a 4000×3000 photo → 2048×1536; 384 float16 channels = 2.4 GB).
MAX_IMAGE_SIDE = 2048
# --to-image: the long side of the reduced copy of the features drawn in the picture.
FIGURE_SIDE = 512


def _drawn(k: int) -> str:
    """The picture's note on its reduced copy: every k-th feature pixel along each side."""
    if k == 1:
        return "every pixel drawn"
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"every {k}{suffix} pixel drawn"


def image_output_size(image_hw, cap: int = MAX_IMAGE_SIDE) -> tuple[int, int]:
    """--to-image: the photo's (H, W), scaled down (aspect kept, rounded) so that the long side is at most ``cap``."""
    H, W = int(image_hw[0]), int(image_hw[1])
    if max(H, W) <= cap:
        return H, W
    f = cap / max(H, W)
    return max(1, round(H * f)), max(1, round(W * f))


def process_to_image(job: Job, model, args, device: str, report: Report, bar) -> str | None:
    """--to-image: features at the photo's own resolution (capped), streamed into OUT/<name>.npy; see the flag's help.
    The reason when the image failed, else None, as :func:`wrcup.cli.upsample.process`."""
    import time

    import torch

    from .._io import atomic_path
    from ..data.images import ImageReadError, load_image
    from .precision import precision_context
    from .upsample import _reason, backbone_input
    from ..models.tiling import learned_passes_to_guidance
    from ..models.to_image import write_features_npy
    from ..viz import save_comparison_figure

    try:
        image = load_image(job.image)
    except ImageReadError as err:
        return str(err)
    H0, W0 = image.shape[-2:]
    target = image_output_size((H0, W0), args.max_side)
    x = backbone_input(image, model, args, device, report, job.image.name)
    guide_image = None
    if args.final_step == "guided":  # the photo at the output size guides the last step
        guide_image = torch.nn.functional.interpolate(image[None].float(), size=target,
                                                      mode="bilinear", align_corners=False, antialias=True)[0]
        guide_image = guide_image.clamp_(0, 1).to(x.device)
    del image
    H, W = x.shape[-2:]
    bar.set_postfix_str(f"{job.image.name} {W0}×{H0} → {W}×{H} → features {target[1]}×{target[0]}", refresh=True)
    written = []
    try:
        with torch.inference_mode(), precision_context(args.precision, device), atomic_path(job.features) as tmp:
            t0 = time.perf_counter()
            guide, low = model.encode(x)
            t1 = time.perf_counter()
            with open(tmp, "wb") as f:
                done = write_features_npy(f, model.upsampler, guide, low, target,
                                          max_memory=args.max_memory, figure_side=FIGURE_SIDE,
                                          learned_passes=learned_passes_to_guidance(low.shape[-2:], (H, W)),
                                          final_step=args.final_step, guide_image=guide_image)
            t2 = time.perf_counter()
            report.status(f"{job.image.name}: features {target[1]}×{target[0]} (float16 .npy); backbone "
                          f"{t1 - t0:.2f} s, upsampling {t2 - t1:.2f} s (learned passes {done.learned_s:.2f} s, "
                          f"{args.final_step} growth and writing {t2 - t1 - done.learned_s:.2f} s: growth {done.growth_s:.2f} "
                          f"s, waiting for the writer {done.wait_s:.2f} s, writer busy {done.write_s:.2f} s)")
        written.append(job.features)
        if job.figure is not None:
            px, py = args.point if args.point is not None else (W0 / 2, H0 / 2)
            point = (px * W / W0, py * H / H0) if 0 <= px < W0 and 0 <= py < H0 else None
            if point is None:
                report.warn(f"{job.image}: --point {px:g},{py:g} is outside the image ({W0}×{H0}); "
                            "its picture has no similarity maps")
            label = None if point is None else f"query ({px:g}, {py:g})"
            save_comparison_figure(job.figure, x[0].cpu(), low[0].cpu(), done.reduced, point,
                                   title=f"{job.image.name} — {args.model} (features {target[1]}×{target[0]}, "
                                         f"{_drawn(done.k)})", point_label=label)
    except (RuntimeError, ValueError, MemoryError) as err:  # e.g. a budget too small: this one fails, others go on
        for path in written:
            path.unlink(missing_ok=True)
        if os.environ.get("WRCUP_DEBUG"):
            raise
        return f"the model failed on it: {_reason(err)}"
    except BaseException as err:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            return f"cannot write {job.features if not written else job.figure}: {_reason(err)}"
        raise
    return None
