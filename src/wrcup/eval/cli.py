"""``wrcup eval TASK``: one command per task; JSON out."""
from __future__ import annotations

import json
import sys
from pathlib import Path

TASKS = ("fidelity", "davis")


def _common(p) -> None:
    p.add_argument("--model", default="wrc-dinov2-s14-imgfocus",
                   help="checkpoint name or .safetensors path (or, for --method none/bilinear, a backbone name)")
    p.add_argument("--method", default="learned", choices=("none", "bilinear", "learned"))
    p.add_argument("--backbone-weights", default=None)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--cache", default=None, help="folder caching backbone features (shared by all methods)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate an upsampler on a task").add_subparsers(dest="task", required=True)
    p = ev.add_parser("fidelity", help="cosine / NMSE against the backbone's features at twice the resolution")
    _common(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--size", type=int, default=224, help="input shorter side (target: twice this)")
    p.add_argument("--every", type=int, default=1, help="use every k-th image (sorted)")
    p.set_defaults(func=_run)
    p = ev.add_parser("davis", help="video object segmentation by label propagation (J&F)")
    _common(p)
    p.add_argument("--root", required=True, help="DAVIS-layout root")
    p.add_argument("--year", default="2016", choices=("2016", "2017"))
    p.add_argument("--split", default="val")
    p.add_argument("--size", type=int, default=448, help="frame shorter side")
    p.add_argument("--sequences", nargs="*", default=None)
    p.add_argument("--temperature", type=float, default=0.1)
    p.set_defaults(func=_run)


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


def _run(args) -> int:
    import torch

    from . import tasks
    from .extract import FeatureExtractor, load_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone, upsampler, meta = load_model(args.model, args.method, device=device, backbone_weights=args.backbone_weights)
    extractor = FeatureExtractor(backbone, upsampler, args.method, cache_dir=args.cache)
    if args.task == "fidelity":
        result = tasks.fidelity(extractor, _image_list(args.images, args.every), size=args.size)
    else:
        result = tasks.davis(extractor, args.root, year=args.year, split=args.split, size=args.size,
                             sequences=args.sequences, temperature=args.temperature)
    result = {"task": args.task, "model": str(args.model), "method": args.method,
              "operator": meta.get("operator"), **result}
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        from .._io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if not isinstance(v, dict)}
    print(json.dumps(summary, indent=2, default=str), file=sys.stdout)
    return 0
