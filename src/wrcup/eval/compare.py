"""``wrcup eval compare``: chosen tasks × methods × models in one run → one JSON, a Markdown table, a bar chart.

Each model is loaded once; its backbone's features are cached on disk (``cache_dir``, a temporary folder when
not given) and the cache is keyed by backbone, input size and image, so every method of every model on the
same backbone reuses them: the backbone runs once per image and input size.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from .._checks import check_choice
from .extract import METHODS, FeatureExtractor, load_model
from .tasks import TASKS, run_task

# The headline number of each task: (key in the runner's result, higher is better, label)
PRIMARY_METRICS = {
    "fidelity": ("cosine", True, "fidelity cosine"),
    "davis": ("J&F-Mean", True, "DAVIS J&F"),
    "seg-probe": ("mIoU", True, "seg mIoU"),
    "depth-probe": ("rmse", False, "depth RMSE"),
    "discovery": ("corloc", True, "CorLoc"),
    "correspondence": ("pck@0.1", True, "PCK@0.1"),
}


def _is_checkpoint(name_or_path) -> bool:
    from ..models.bundle import SHIPPED_CHECKPOINTS

    return str(name_or_path) in SHIPPED_CHECKPOINTS or str(name_or_path).endswith(".safetensors")


def run_compare(tasks: list[str], methods: list[str], models: list[str], task_options: dict[str, dict] | None = None,
                device=None, cache_dir: str | Path | None = None, backbone_weights=None,
                progress: bool = True) -> dict:
    """Run every task for every model × method.

    Args:
        tasks: names from :data:`wrcup.eval.tasks.TASKS`.
        methods: from ``none``/``bilinear``/``learned``; ``learned`` is skipped (and recorded as skipped) for a
            model given as a backbone name rather than a checkpoint.
        models: checkpoint names / .safetensors paths, or backbone names.
        task_options: per task, the runner's keyword arguments (``progress`` excluded).
    Returns:
        ``{"tasks", "methods", "models", "runs": [{"model", "method", "task", "result"} or
        {..., "skipped": reason}], "primary_metrics": {task: {"key", "higher_is_better", "label"}}}``.
    """
    for t in tasks:
        check_choice(t, "tasks", TASKS)
    for m in methods:
        check_choice(m, "methods", METHODS)
    if not tasks or not methods or not models:
        raise ValueError("tasks, methods and models must each name at least one entry")
    task_options = task_options or {}
    with tempfile.TemporaryDirectory(prefix="wrcup-compare-") as scratch:
        cache = Path(cache_dir) if cache_dir else Path(scratch)
        runs = []
        for model in models:
            checkpoint = _is_checkpoint(model)
            backbone, upsampler, meta = load_model(model, "learned" if checkpoint else "none", device=device,
                                                   backbone_weights=backbone_weights)
            for method in methods:
                if method == "learned" and upsampler is None:
                    for task in tasks:
                        runs.append({"model": str(model), "method": method, "task": task,
                                     "skipped": "model is a backbone name, not a checkpoint: no learned upsampler"})
                    continue
                extractor = FeatureExtractor(backbone, upsampler if method == "learned" else None, method,
                                             cache_dir=cache)
                for task in tasks:
                    result = run_task(task, extractor, progress=progress, **task_options.get(task, {}))
                    runs.append({"model": str(model), "method": method, "task": task,
                                 "operator": meta.get("operator") if method == "learned" else None,
                                 "result": result})
    return {"tasks": list(tasks), "methods": list(methods), "models": [str(m) for m in models], "runs": runs,
            "options": {t: {k: v for k, v in task_options.get(t, {}).items()} for t in tasks},
            "primary_metrics": {t: {"key": PRIMARY_METRICS[t][0], "higher_is_better": PRIMARY_METRICS[t][1],
                                    "label": PRIMARY_METRICS[t][2]} for t in tasks}}


def _primary(run: dict) -> float | None:
    if "result" not in run:
        return None
    value = run["result"].get(PRIMARY_METRICS[run["task"]][0])
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _model_label(model: str) -> str:
    return Path(model).stem if str(model).endswith(".safetensors") else str(model)


def markdown_table(result: dict) -> str:
    """Rows model × method, columns the primary metric of each task (↑ higher / ↓ lower is better)."""
    tasks = result["tasks"]
    header = ["model", "method"] + [
        f"{PRIMARY_METRICS[t][2]} {'↑' if PRIMARY_METRICS[t][1] else '↓'}" for t in tasks]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(tasks)) + "|"]
    for model in result["models"]:
        for method in result["methods"]:
            cells = [_model_label(model), method]
            for task in tasks:
                run = next((r for r in result["runs"]
                            if r["model"] == model and r["method"] == method and r["task"] == task), None)
                value = None if run is None else _primary(run)
                cells.append("—" if value is None else f"{value:.4f}" if task == "fidelity" else f"{value:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(result: dict, path: str | Path) -> Path:
    """One panel per task, one bar per model × method (PNG, matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["tasks"]
    combos = [(m, k) for m in result["models"] for k in result["methods"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 0.6 * len(combos) + 1.5) * len(tasks), 4),
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes[0], tasks):
        labels, values, colour = [], [], []
        for model, method in combos:
            run = next((r for r in result["runs"]
                        if r["model"] == model and r["method"] == method and r["task"] == task), None)
            value = None if run is None else _primary(run)
            labels.append(f"{_model_label(model)}\n{method}" if len(result["models"]) > 1 else method)
            values.append(0.0 if value is None else value)
            colour.append(colours[result["methods"].index(method) % len(colours)])
        ax.bar(range(len(values)), values, color=colour)
        ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=30 if len(combos) > 3 else 0)
        key, higher, label = PRIMARY_METRICS[task]
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_json: str | Path) -> dict[str, Path]:
    """Write ``out_json``, and next to it the Markdown table (.md) and the bar chart (.png)."""
    import json

    from .._io import atomic_path

    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = out_json.with_suffix(".md")
    with atomic_path(md) as tmp:
        tmp.write_text(markdown_table(result))
    png = bar_chart(result, out_json.with_suffix(".png"))
    return {"json": out_json, "markdown": md, "chart": png}
