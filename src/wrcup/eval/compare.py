"""``wrcup eval compare``: chosen tasks × methods × models in one run → one JSON, a Markdown table, a dot chart.

Each model is loaded once; its backbone's features are cached on disk (``cache_dir``, a temporary folder when
not given) and the cache is keyed by backbone and its weights, input size and image bytes, so every method of
every model on the same backbone reuses them: the backbone runs once per image and input size. ``none`` and ``bilinear`` are
computed once per backbone, not once per model. With ``parts_dir`` every finished result is kept on disk, so a
long comparison that is interrupted (or extended by a model) resumes without recomputing what it had.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from .._cache import cache_key
from .._io import atomic_path, file_sha256
from .extract import FeatureExtractor, get_method, load_model, uses_upsampler
from .tasks import get_task, run_task


def _primary(task: str) -> tuple[str, bool, str]:
    """The headline number of a task (its registry entry): (key in the result, higher is better, label)."""
    spec = get_task(task)
    return spec.metric, spec.higher_is_better, spec.label


def _is_checkpoint(name_or_path) -> bool:
    from ..models.bundle import SHIPPED_CHECKPOINTS

    return str(name_or_path) in SHIPPED_CHECKPOINTS or str(name_or_path).endswith(".safetensors")


def _cell_key(task: str, method: str, subject: str, options: dict, weights_identity: str) -> str:
    """Identity of one result: what was measured, on what (subject and backbone weights), with which options."""
    record = {"task": task, "method": method, "subject": subject, "options": options, "weights": weights_identity}
    return cache_key(record, length=16, structured=True)


def _load_part(path: Path, key: str) -> dict | None:
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or half-written by a killed run: recompute
    return part if part.get("key") == key and "result" in part else None


def run_compare(tasks: list[str], methods: list[str], models: list[str], task_options: dict[str, dict] | None = None,
                device=None, cache_dir: str | Path | None = None, backbone_weights=None,
                progress: bool = True, parts_dir: str | Path | None = None) -> dict:
    """Run every task for every model × method.

    ``none`` and ``bilinear`` depend only on the backbone, so they run once per backbone and every model on that
    backbone shares the result (its run records ``"shared_with"``, the model that computed it).

    Args:
        tasks: names from :data:`wrcup.eval.tasks.TASKS`.
        methods: from :func:`wrcup.eval.extract.list_methods`; those that run the checkpoint's upsampler
            (``learned``, ``learned-4x``, …) are skipped (and recorded as skipped) for a model given as a backbone
            name rather than a checkpoint.
        models: checkpoint names / .safetensors paths, or backbone names.
        task_options: per task, the runner's keyword arguments (``progress`` excluded).
        parts_dir: when given, every finished (task, method, model) result is written there at once, and a later
            run with the same task options, method, model and backbone weights (checkpoints and weight files
            identified by their sha256) reuses it instead of recomputing: an interrupted comparison resumes where
            it stopped.
    Returns:
        ``{"tasks", "methods", "models", "runs": [{"model", "method", "task", "backbone", "result"} or
        {..., "skipped": reason}], "primary_metrics": {task: {"key", "higher_is_better", "label"}}}``.
    """
    from ..models.bundle import checkpoint_path

    for t in tasks:
        get_task(t)
    for m in methods:
        get_method(m)
    if not tasks or not methods or not models:
        raise ValueError("tasks, methods and models must each name at least one entry")
    task_options = task_options or {}
    parts = Path(parts_dir) if parts_dir is not None else None
    if parts is not None:
        parts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wrcup-compare-") as scratch:
        cache = Path(cache_dir) if cache_dir else Path(scratch)
        runs, computed = [], {}
        for model in models:
            checkpoint = _is_checkpoint(model)
            backbone, upsampler, meta = load_model(model, "learned" if checkpoint else "none", device=device,
                                                   backbone_weights=backbone_weights)
            backbone_name = str(meta.get("backbone", model))
            for method in methods:
                learned = uses_upsampler(method)
                if learned and upsampler is None:
                    for task in tasks:
                        runs.append({"model": str(model), "method": method, "task": task, "backbone": backbone_name,
                                     "skipped": "model is a backbone name, not a checkpoint: no learned upsampler"})
                    continue
                if learned:
                    path = checkpoint_path(model)
                    subject = f"checkpoint:{path.name}:{file_sha256(path)}"
                else:
                    subject = f"backbone:{backbone_name}"
                extractor = None
                for task in tasks:
                    options = task_options.get(task, {})
                    key = _cell_key(task, method, subject, options, backbone.weights_identity())
                    run = {"model": str(model), "method": method, "task": task, "backbone": backbone_name,
                           "operator": meta.get("operator") if learned else None}
                    if key in computed:
                        run.update(shared_with=computed[key][0], result=computed[key][1])
                        runs.append(run)
                        continue
                    part_file = None if parts is None else parts / f"{task}-{method}-{_model_label(model)}-{key}.json"
                    part = None if part_file is None else _load_part(part_file, key)
                    if part is not None:
                        result = part["result"]
                    else:
                        if extractor is None:
                            extractor = FeatureExtractor(backbone, upsampler if learned else None,
                                                         method, cache_dir=cache)
                        result = run_task(task, extractor, progress=progress, **options)
                        if part_file is not None:
                            with atomic_path(part_file) as tmp:
                                tmp.write_text(json.dumps({"key": key, **run, "subject": subject, "options": options,
                                                           "result": result}, indent=2, default=str) + "\n")
                    computed[key] = (str(model), result)
                    run["result"] = result
                    runs.append(run)
    return {"tasks": list(tasks), "methods": list(methods), "models": [str(m) for m in models], "runs": runs,
            "options": {t: {k: v for k, v in task_options.get(t, {}).items()} for t in tasks},
            "primary_metrics": {t: dict(zip(("key", "higher_is_better", "label"), _primary(t))) for t in tasks}}


def _primary_value(run: dict) -> float | None:
    if "result" not in run:
        return None
    value = run["result"].get(_primary(run["task"])[0])
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _model_label(model: str) -> str:
    return Path(model).stem if str(model).endswith(".safetensors") else str(model)


def table_rows(result: dict) -> list[tuple[str, str, dict[str, dict]]]:
    """``(model label, method label, {task: run})`` per row: backbone-only methods once per backbone (labelled
    with the backbone), learned upsamplers once per checkpoint (method labelled with its operator); rows whose
    every run was skipped are left out."""
    rows = []
    for model in result["models"]:
        for method in result["methods"]:
            runs = {r["task"]: r for r in result["runs"] if r["model"] == model and r["method"] == method}
            if not runs or all("skipped" in r or "shared_with" in r for r in runs.values()):
                continue
            first = next(iter(runs.values()))
            if uses_upsampler(method):
                label, method_label = _model_label(model), f"{method} ({first.get('operator') or '?'})"
            else:
                label, method_label = first.get("backbone") or _model_label(model), method
            rows.append((label, method_label, runs))
    return rows


def markdown_table(result: dict) -> str:
    """Rows as :func:`table_rows`, columns the primary metric of each task (↑ higher / ↓ lower is better)."""
    tasks = result["tasks"]
    header = ["model", "method"] + [
        f"{_primary(t)[2]} {'↑' if _primary(t)[1] else '↓'}" for t in tasks]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(tasks)) + "|"]
    for label, method_label, runs in table_rows(result):
        cells = [label, method_label]
        for task in tasks:
            value = _primary_value(runs[task]) if task in runs else None
            cells.append("—" if value is None else f"{value:.4f}" if task == "fidelity" else f"{value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_figure(result: dict):
    """One panel per task, one dot per row of :func:`table_rows`, each value written beside its dot.

    Dots, not bars: the rows differ by a few per cent (fidelity cosines of 0.88–0.92), which bars drawn from zero
    would flatten, while bars drawn from anywhere else would exaggerate. Each panel's axis spans its own values
    with a margin; a row without a value for a task (skipped, not run) gets no dot rather than a zero.
    Returns the matplotlib figure (Agg backend); the caller closes it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["tasks"]
    rows = table_rows(result)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 0.6 * len(rows) + 1.5) * len(tasks), 4),
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several_models = len({label for label, _, _ in rows}) > 1
    labels = [f"{label}\n{method_label}" if several_models else method_label for label, method_label, _ in rows]
    for ax, task in zip(axes[0], tasks):
        points = [(i, _primary_value(runs[task])) for i, (_, _, runs) in enumerate(rows) if task in runs]
        points = [(i, v) for i, v in points if v is not None]
        for i, v in points:
            ax.plot(i, v, "o", color=colours[i % len(colours)], markersize=7)
            ax.annotate(f"{v:.4g}", (i, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
        if points:
            low, high = min(v for _, v in points), max(v for _, v in points)
            margin = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
            ax.set_ylim(low - margin, high + 1.5 * margin)  # room above the top dot for its label
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30 if len(rows) > 3 else 0)
        ax.grid(axis="y", alpha=0.3)
        _, higher, label = _primary(task)
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=9)
    fig.tight_layout()
    return fig


def comparison_chart(result: dict, path: str | Path) -> Path:
    """Save :func:`comparison_figure` as a PNG at ``path`` (parent folders created)."""
    import matplotlib.pyplot as plt

    fig = comparison_figure(result)
    path = Path(path)
    try:  # atomic_path creates the parent folders
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path


def write_outputs(result: dict, out_json: str | Path) -> dict[str, Path]:
    """Write ``out_json``, and next to it the Markdown table (.md) and the chart (.png)."""
    out_json = Path(out_json)
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = out_json.with_suffix(".md")
    with atomic_path(md) as tmp:
        tmp.write_text(markdown_table(result))
    png = comparison_chart(result, out_json.with_suffix(".png"))
    return {"json": out_json, "markdown": md, "chart": png}
