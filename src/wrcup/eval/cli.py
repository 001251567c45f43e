"""``wrcup eval TASK``: one command per task, JSON out; ``wrcup eval compare`` runs several tasks for several
models and methods in one go (JSON, Markdown table, dot chart)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..models.names import DEFAULT_CHECKPOINT
from .extract import get_method, list_methods, uses_upsampler
from .tasks import get_task, list_tasks
from .tasks._common import option_choices


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# Every task's options are the fields of its options dataclass (wrcup.eval.tasks.<task>): flag names, defaults,
# choices and help come from there. A required option is enforced when the task runs, so that ``compare`` can
# offer every task's options under a ``--<task>-`` prefix.
def _flag_name(f) -> str:
    return f.metadata.get("flag") or f.name


def _dest(task: str, f, prefixed: bool) -> str:
    return f"{task.replace('-', '_')}__{_flag_name(f)}" if prefixed else _flag_name(f)


def _flag(task: str, f, prefixed: bool) -> str:
    return "--" + (f"{task}-" if prefixed else "") + _flag_name(f).replace("_", "-")


def _is_required(f) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _argparse_kwargs(f) -> dict:
    """argparse keywords of one option field, from its type annotation, default and metadata."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))  # "int" or int
    default = None if _is_required(f) else f.default
    help_text = f.metadata.get("help", "")
    if annotation == "bool":
        return dict(action=argparse.BooleanOptionalAction, default=default, help=help_text)
    kwargs: dict = {"default": default}
    if annotation.startswith("list"):
        kwargs["nargs"] = "+" if _is_required(f) else "*"
    elif annotation.startswith("int"):
        kwargs["type"] = int
    elif annotation.startswith("float"):
        kwargs["type"] = float
    choices = option_choices(f)
    if choices is not None:
        kwargs["choices"] = choices
    else:
        kwargs["metavar"] = _flag_name(f).upper()
    if default is not None:
        help_text = f"{help_text} (default: {default})"
    kwargs["help"] = help_text
    return {k: v for k, v in kwargs.items() if v is not None or k == "default"}


def _add_task_options(p, task: str, prefixed: bool) -> None:
    for f in dataclasses.fields(get_task(task).options):
        kwargs = _argparse_kwargs(f)
        if f.metadata.get("positional") and not prefixed:
            kwargs.pop("default")
            kwargs["nargs"] = "+"
            p.add_argument(_flag_name(f), **kwargs)
            continue
        p.add_argument(_flag(task, f, prefixed), dest=_dest(task, f, prefixed), **kwargs)


def task_options(task: str, args, prefixed: bool = False) -> dict:
    """The task's options (as run and recorded: e.g. fidelity's folders expanded into image files) from parsed
    ``args`` (``--<task>-`` options when ``prefixed``); ValueError naming the flag when a required one is
    missing or a value is not among its choices."""
    spec = get_task(task)
    options = {}
    for f in dataclasses.fields(spec.options):
        value = getattr(args, _dest(task, f, prefixed))
        if _is_required(f) and value in (None, []):
            raise ValueError(f"task {task!r} needs {_flag(task, f, prefixed)}")
        options[f.name] = value
    if prefixed and getattr(args, "size", None) is not None:
        options["size"] = args.size
    return spec.make_options(**options).resolved().as_dict()


def _common(p) -> None:
    p.add_argument("--backbone-weights", default=None)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--cache", default=None, help="folder caching backbone features (shared by all methods)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate an upsampler on a task").add_subparsers(dest="task", required=True)
    for task in list_tasks():
        p = ev.add_parser(task, help=get_task(task).help)
        p.add_argument("--model", default=DEFAULT_CHECKPOINT,
                       help="checkpoint name or .safetensors path (or, for a --method that does not run the "
                            "upsampler: " + ", ".join(m for m in list_methods() if not uses_upsampler(m))
                            + ", a backbone name)")
        p.add_argument("--method", default="learned", choices=list_methods(),
                       help="; ".join(f"{m}: {get_method(m).help}" for m in list_methods()) + " (default: learned)")
        _common(p)
        _add_task_options(p, task, prefixed=False)
        p.set_defaults(func=_run)
    p = ev.add_parser("compare", help="several tasks × methods × models in one run: JSON, Markdown table, dot chart")
    p.add_argument("--tasks", type=_csv, required=True, help=f"comma-separated, from {', '.join(list_tasks())}")
    p.add_argument("--methods", type=_csv, default=list_methods(),
                   help=f"comma-separated, from {', '.join(list_methods())} (default: all)")
    p.add_argument("--models", nargs="+", default=[DEFAULT_CHECKPOINT],
                   help="checkpoints (names or .safetensors paths) or backbone names (for those, the methods "
                        "that run the upsampler are skipped)")
    p.add_argument("--size", type=int, default=None, help="input size for every task (default: each task's own)")
    p.add_argument("--parts", default=None,
                   help="folder keeping every finished task × method × model result; a rerun reuses them "
                        "(default: OUT without its suffix + '.parts'; 'none' to keep nothing)")
    _common(p)
    for task in list_tasks():
        _add_task_options(p.add_argument_group(f"{task} (with --tasks {task})"), task, prefixed=True)
    p.set_defaults(func=_run_compare, task="compare")


def _image_list(items: list[str], every: int) -> list[Path]:
    from .tasks.fidelity import image_list

    return image_list(items, every)


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
              "operator": meta.get("operator") if uses_upsampler(args.method) else None, **result}
    if args.out:
        _write_json(args.out, result)
    summary = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    print(json.dumps(summary, indent=2, default=str), file=sys.stdout)
    return 0


def _run_compare(args) -> int:
    from .compare import run_compare, write_outputs

    device = _setup(args)
    unknown = [t for t in args.tasks if t not in list_tasks()]
    if unknown or not args.tasks:
        raise ValueError(f"--tasks must name tasks from {', '.join(list_tasks())}; got {args.tasks}")
    bad = [m for m in args.methods if m not in list_methods()]
    if bad or not args.methods:
        raise ValueError(f"--methods must name methods from {', '.join(list_methods())}; got {args.methods}")
    options = {task: task_options(task, args, prefixed=True) for task in args.tasks}
    out = Path(args.out or "wrcup-compare.json")
    parts = None if args.parts == "none" else Path(args.parts) if args.parts else out.with_suffix(".parts")
    result = run_compare(args.tasks, args.methods, args.models, options, device=device, cache_dir=args.cache,
                         backbone_weights=args.backbone_weights, progress=not args.quiet, parts_dir=parts)
    paths = write_outputs(result, out)
    print(paths["markdown"].read_text(), file=sys.stdout)
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stdout)
    return 0
