"""Evaluation tasks: a model + a method + a dataset → a JSON-ready result dict.

Each task is one module of this package that declares its options once, as a dataclass (defaults, help text and
choices in the fields; the dataset choices come from the reader registry :mod:`wrcup.data.registry`), and
registers ``run(extractor, options, progress)`` here with :func:`register_task`. ``wrcup eval TASK`` and
``wrcup eval compare`` build their flags from those dataclasses (:mod:`wrcup.eval.cli`).

Each runner is deterministic (fixed seeds, no random augmentation), shows progress, and can cache the backbone
features on disk (the extractor's ``cache_dir``), which every method shares.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Callable

import torch

from ..._registry import Registry
from ._common import TaskOptions, option

__all__ = ["Task", "TASKS", "TaskOptions", "get_task", "list_tasks", "option", "register_task", "run_task",
           "unregister_task"]


@dataclass(frozen=True)
class Task:
    """A registered task: its options dataclass, its runner, and its headline metric (the key in the result,
    whether higher is better, the label of tables and charts)."""

    name: str
    options: type
    run: Callable
    help: str
    metric: str
    higher_is_better: bool
    label: str

    def make_options(self, *args, **kwargs):
        """The options dataclass from keyword (or, in field order, positional) arguments, checked."""
        return self.options(*args, **kwargs)


_TASKS: Registry[Task] = Registry("task")


def register_task(name: str, options: type, *, help: str, metric: str, higher_is_better: bool, label: str):
    """Decorator registering ``run(extractor, options, progress=True) → dict`` as task ``name``."""
    return _TASKS.decorator(name, lambda run: Task(name, options, run, help, metric, higher_is_better, label))


def unregister_task(name: str) -> Task:
    """Remove task ``name`` (e.g. a test's temporary task); returns its entry."""
    return _TASKS.unregister(name)


def list_tasks() -> list[str]:
    """The task names, in registration order."""
    return _TASKS.names()


def get_task(name: str) -> Task:
    """The entry of task ``name``; ValueError naming the choices otherwise."""
    return _TASKS.get(name)


def run_task(task: str, extractor, progress: bool = True, **options) -> dict:
    """Run the task named ``task`` with keyword ``options`` (the fields of its options dataclass); the global
    torch seed is reset first so results do not depend on what ran before."""
    spec = get_task(task)
    opts = spec.make_options(**options).resolved()
    torch.manual_seed(0)
    return spec.run(extractor, opts, progress=progress)


def _keyword_runner(name: str) -> Callable:
    """``runner(extractor, *options, progress=True, **options)``: a task as a plain function, its signature that
    of the options dataclass."""
    spec = get_task(name)

    def runner(extractor, *args, progress: bool = True, **kwargs) -> dict:
        return spec.run(extractor, spec.make_options(*args, **kwargs).resolved(), progress=progress)

    params = [inspect.Parameter("extractor", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in fields(spec.options):
        default = inspect.Parameter.empty if f.default is f.default_factory else f.default  # both MISSING: required
        params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    params.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=True))
    runner.__signature__ = inspect.Signature(params)
    runner.__name__ = name.replace("-", "_")
    runner.__doc__ = spec.run.__doc__
    return runner


# the task modules register themselves, in the order the command line lists them
from . import fidelity as _fidelity  # noqa: E402,F401
from . import davis as _davis  # noqa: E402,F401
from . import seg_probe as _seg_probe  # noqa: E402,F401
from . import depth_probe as _depth_probe  # noqa: E402,F401
from . import discovery as _discovery  # noqa: E402,F401
from . import correspondence as _correspondence  # noqa: E402,F401
from .discovery import key_bias, last_block_keys  # noqa: E402,F401

TASKS = tuple(list_tasks())
# each task as a function of (extractor, its options...): tasks.seg_probe(extractor, "camvid", root, size=448)
fidelity = _keyword_runner("fidelity")
davis = _keyword_runner("davis")
seg_probe = _keyword_runner("seg-probe")
depth_probe = _keyword_runner("depth-probe")
discovery = _keyword_runner("discovery")
correspondence = _keyword_runner("correspondence")
from ...data.davis import davis_fg_split  # noqa: E402,F401
