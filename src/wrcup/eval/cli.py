"""``wrcup eval TASK``: one command per task, JSON out; ``wrcup eval compare`` runs several tasks for several
models and methods in one go (JSON, Markdown table, dot chart)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..models.names import DEFAULT_CHECKPOINT
from .tasks import TASKS

_METHODS = ("none", "bilinear", "learned")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# Per-task options: (name, argparse keyword arguments). The name is the runner's keyword argument (except
# fidelity's "images"/"every", turned into image paths); "required" is enforced when the task runs, so that
# ``compare`` can offer every task's options under a ``--<task>-`` prefix.
TASK_OPTIONS: dict[str, list[tuple[str, dict]]] = {
    "fidelity": [
        ("images", dict(nargs="+", required=True, help="image files or folders")),
        ("size", dict(type=int, default=224, help="input shorter side (target: twice this)")),
        ("every", dict(type=int, default=1, help="use every k-th image (sorted)")),
    ],
    "davis": [
        ("root", dict(required=True, help="DAVIS-layout root")),
        ("year", dict(default="2016", choices=("2016", "2017"))),
        ("split", dict(default="val")),
        ("size", dict(type=int, default=448, help="frame shorter side")),
        ("sequences", dict(nargs="*", default=None)),
        ("temperature", dict(type=float, default=0.1)),
    ],
    "seg-probe": [
        ("dataset", dict(required=True, choices=("camvid", "voc", "ade20k", "cityscapes", "cocostuff", "davis-fg"))),
        ("root", dict(required=True, help="dataset root in the reader's standard layout")),
        ("size", dict(type=int, default=448, help="input size (training: size×size centre crops; "
                                                  "evaluation: shorter side)")),
        ("epochs", dict(type=int, default=20)),
        ("lr", dict(type=float, default=5e-4)),
        ("batch_size", dict(type=int, default=4)),
        ("max_images", dict(type=int, default=None, help="at most this many images per split (spread evenly)")),
        ("train_split", dict(default=None, help="reader split to train on (default: the dataset's train)")),
        ("val_split", dict(default=None, help="reader split to evaluate on (default: the dataset's val)")),
        ("train_sequences", dict(nargs="*", default=None, help="davis-fg: training sequences")),
        ("test_sequences", dict(nargs="*", default=None, help="davis-fg: test sequences")),
        ("frame_step", dict(type=int, default=5, help="davis-fg: every k-th annotated frame")),
        ("davis_year", dict(default="2016", choices=("2016", "2017"))),
        ("davis_split", dict(default="val")),
        ("seed", dict(type=int, default=0)),
    ],
    "depth-probe": [
        ("root", dict(required=True, help="NYUv2-layout root (<root>/<split>/rgb, <root>/<split>/depth)")),
        ("size", dict(type=int, default=448)),
        ("epochs", dict(type=int, default=20)),
        ("lr", dict(type=float, default=5e-4)),
        ("batch_size", dict(type=int, default=4)),
        ("max_images", dict(type=int, default=None)),
        ("train_split", dict(default="train")),
        ("val_split", dict(default="test")),
        ("seed", dict(type=int, default=0)),
    ],
    "discovery": [
        ("dataset", dict(required=True, choices=("voc07", "voc12", "coco20k", "davis-first-frames"))),
        ("root", dict(required=True, help="VOC<year> folder, COCO image folder, or DAVIS root")),
        ("size", dict(type=int, default=448)),
        ("tau", dict(type=float, default=None, help="graph threshold (default 0.2 VOC/DAVIS, 0.3 COCO20K)")),
        ("max_images", dict(type=int, default=None)),
        ("split", dict(default="trainval", help="VOC image set")),
        ("coco_annotations", dict(default=None, help="coco20k: instances JSON")),
        ("coco_image_list", dict(default=None, help="coco20k: image list text file")),
        ("davis_year", dict(default="2016", choices=("2016", "2017"))),
        ("davis_split", dict(default="val")),
        ("remove_key_bias", dict(action=argparse.BooleanOptionalAction, default=True,
                                 help="subtract the key projection's bias (attention ignores it) before TokenCut")),
    ],
    "correspondence": [
        ("dataset", dict(required=True, choices=("spair", "homography", "synthetic"))),
        ("root", dict(required=True, help="SPair-71k root, folder with graf1/graf3/H1to3p.xml, or photo folder")),
        ("size", dict(type=int, default=448)),
        ("max_images", dict(type=int, default=None)),
        ("split", dict(default="test", help="SPair split")),
        ("category", dict(default=None, help="SPair category")),
        ("pairs_per_image", dict(type=int, default=2, help="synthetic: homographies per photo")),
        ("max_shift", dict(type=float, default=0.15, help="synthetic: corner shift bound (fraction of size)")),
        ("grid_step", dict(type=int, default=16, help="homography/synthetic: keypoint grid step (px)")),
        ("seed", dict(type=int, default=0)),
    ],
}

_HELP = {
    "fidelity": "cosine / NMSE against the backbone's features at twice the resolution",
    "davis": "video object segmentation by label propagation (J&F)",
    "seg-probe": "semantic segmentation by a linear probe (mIoU, pixel accuracy)",
    "depth-probe": "monocular depth by a linear probe on NYUv2-layout data (RMSE, δ1)",
    "discovery": "object discovery by TokenCut on the last block's keys (CorLoc)",
    "correspondence": "keypoint transfer by nearest neighbours (PCK@0.1/0.05/0.01)",
}


def _dest(task: str, name: str, prefixed: bool) -> str:
    return f"{task.replace('-', '_')}__{name}" if prefixed else name


def _add_task_options(p, task: str, prefixed: bool) -> None:
    for name, kwargs in TASK_OPTIONS[task]:
        kwargs = dict(kwargs)
        kwargs.pop("required", None)
        if "choices" not in kwargs and "action" not in kwargs:
            kwargs.setdefault("metavar", name.upper())
        flag = "--" + (f"{task}-" if prefixed else "") + name.replace("_", "-")
        if task == "fidelity" and name == "images" and not prefixed:
            p.add_argument("images", **kwargs)
            continue
        p.add_argument(flag, dest=_dest(task, name, prefixed), **kwargs)


def task_options(task: str, args, prefixed: bool = False) -> dict:
    """The runner's keyword arguments for ``task`` from parsed ``args`` (``--<task>-`` options when
    ``prefixed``); ValueError naming the flag when a required one is missing."""
    options = {}
    for name, kwargs in TASK_OPTIONS[task]:
        value = getattr(args, _dest(task, name, prefixed))
        if kwargs.get("required") and value in (None, []):
            flag = "--" + (f"{task}-" if prefixed else "") + name.replace("_", "-")
            raise ValueError(f"task {task!r} needs {flag}")
        options[name] = value
    if prefixed and getattr(args, "size", None) is not None:
        options["size"] = args.size
    if task == "fidelity":
        options["image_paths"] = _image_list(options.pop("images"), options.pop("every"))
    return options


def _common(p) -> None:
    p.add_argument("--backbone-weights", default=None)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--cache", default=None, help="folder caching backbone features (shared by all methods)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate an upsampler on a task").add_subparsers(dest="task", required=True)
    for task in TASKS:
        p = ev.add_parser(task, help=_HELP[task])
        p.add_argument("--model", default=DEFAULT_CHECKPOINT,
                       help="checkpoint name or .safetensors path (or, for --method none/bilinear, a backbone name)")
        p.add_argument("--method", default="learned", choices=_METHODS)
        _common(p)
        _add_task_options(p, task, prefixed=False)
        p.set_defaults(func=_run)
    p = ev.add_parser("compare", help="several tasks × methods × models in one run: JSON, Markdown table, dot chart")
    p.add_argument("--tasks", type=_csv, required=True, help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--methods", type=_csv, default=list(_METHODS), help="comma-separated (default all three)")
    p.add_argument("--models", nargs="+", default=[DEFAULT_CHECKPOINT],
                   help="checkpoints (names or .safetensors paths) or backbone names (no 'learned' for those)")
    p.add_argument("--size", type=int, default=None, help="input size for every task (default: each task's own)")
    p.add_argument("--parts", default=None,
                   help="folder keeping every finished task × method × model result; a rerun reuses them "
                        "(default: OUT without its suffix + '.parts'; 'none' to keep nothing)")
    _common(p)
    for task in TASKS:
        _add_task_options(p.add_argument_group(f"{task} (with --tasks {task})"), task, prefixed=True)
    p.set_defaults(func=_run_compare, task="compare")


def _image_list(items: list[str], every: int) -> list[Path]:
    from ..data.images import list_images

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"images: no such file or folder: {item}")
    return sorted(paths)[::max(1, every)]


def _setup(args):
    import torch

    from .._checks import resolve_device

    device = resolve_device(args.device, "--device")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def _write_json(path, result) -> None:
    from .._io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")


def _run(args) -> int:
    from . import tasks
    from .extract import FeatureExtractor, load_model

    device = _setup(args)
    options = task_options(args.task, args)
    backbone, upsampler, meta = load_model(args.model, args.method, device=device, backbone_weights=args.backbone_weights)
    extractor = FeatureExtractor(backbone, upsampler, args.method, cache_dir=args.cache)
    result = tasks.run_task(args.task, extractor, progress=not args.quiet, **options)
    result = {"task": args.task, "model": str(args.model), "method": args.method,
              "operator": meta.get("operator") if args.method == "learned" else None, **result}
    if args.out:
        _write_json(args.out, result)
    summary = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    print(json.dumps(summary, indent=2, default=str), file=sys.stdout)
    return 0


def _run_compare(args) -> int:
    from .compare import run_compare, write_outputs

    device = _setup(args)
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or not args.tasks:
        raise ValueError(f"--tasks must name tasks from {', '.join(TASKS)}; got {args.tasks}")
    bad = [m for m in args.methods if m not in _METHODS]
    if bad or not args.methods:
        raise ValueError(f"--methods must name methods from {', '.join(_METHODS)}; got {args.methods}")
    options = {task: task_options(task, args, prefixed=True) for task in args.tasks}
    out = Path(args.out or "wrcup-compare.json")
    parts = None if args.parts == "none" else Path(args.parts) if args.parts else out.with_suffix(".parts")
    result = run_compare(args.tasks, args.methods, args.models, options, device=device, cache_dir=args.cache,
                         backbone_weights=args.backbone_weights, progress=not args.quiet, parts_dir=parts)
    paths = write_outputs(result, out)
    print(paths["markdown"].read_text(), file=sys.stdout)
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stdout)
    return 0
