"""The "How to add …" examples of docs/DESIGN.md run as printed and do what the document says: the operator
trains and loads, the task is a ``wrcup eval`` command that runs, the reader is a ``--dataset`` choice of its
task. Each example is read out of the document by its marker, so the document and these tests cannot drift;
every registration is undone afterwards."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import wrcup
from wrcup.cli.main import build_parser, main
from wrcup.data.registry import get_dataset, list_datasets, unregister_dataset
from wrcup.eval.tasks import get_task, list_tasks, unregister_task
from wrcup.nn import list_operators, unregister_operator

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"


def design_example(marker: str) -> str:
    """The code block that follows ``<!-- example: MARKER -->`` in docs/DESIGN.md."""
    found = re.findall(rf"<!-- example: {re.escape(marker)} -->\s*```python\n(.*?)```", DESIGN.read_text(), re.S)
    assert len(found) == 1, f"docs/DESIGN.md needs exactly one '<!-- example: {marker} -->' python block"
    return found[0]


def exec_example(marker: str) -> types.ModuleType:
    """Run the example as the body of a module (as if it were a file of the package)."""
    module = types.ModuleType(f"design_example_{marker}")
    sys.modules[module.__name__] = module
    try:
        exec(compile(design_example(marker), f"docs/DESIGN.md ({marker})", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module


def _subparsers(parser) -> dict:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


@pytest.fixture
def example_operator():
    module = exec_example("operator")
    try:
        yield module
    finally:
        unregister_operator("nearest-gain")
    assert "nearest-gain" not in list_operators()


@pytest.fixture
def example_task():
    module = exec_example("task")
    try:
        yield module
    finally:
        unregister_task("feature-norm")
    assert "feature-norm" not in list_tasks()


@pytest.fixture
def example_dataset():
    module = exec_example("dataset")
    try:
        yield module
    finally:
        unregister_dataset("segmentation", "two-class-folders")
    assert "two-class-folders" not in list_datasets("segmentation")


def test_example_operator_trains_two_steps_and_loads(example_operator, tmp_path, real_photos, embedded_backbone,
                                                     capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in real_photos[:2]:
        shutil.copy(p, photos / p.name)
    out = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--out", str(out), "--operator", "nearest-gain", "--steps", "2",
                 "--lr", "1e-2", "--high-res", "112", "--crops", "2", "--batch-size", "2", "--checkpoint-every", "0",
                 "--device", "cpu", "--name", "toy"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    assert main(["info"]) == 0
    assert "nearest-gain: Nearest-neighbour upsampling" in capsys.readouterr().out
    model = wrcup.load(out / "toy.safetensors", fold_bn=False)
    operator = model.upsampler.operator
    assert isinstance(operator, example_operator.NearestGain)
    assert not torch.equal(operator.gain, torch.ones_like(operator.gain))  # the two steps trained it
    with torch.no_grad():
        assert model(torch.rand(1, 3, 56, 56)).shape == (1, embedded_backbone.dim, 8, 8)


def test_example_task_is_an_eval_command_that_runs(example_task, tmp_path, real_photos, embedded_backbone, capsys):
    evaluate = _subparsers(build_parser())["eval"]
    assert "feature-norm" in _subparsers(evaluate)
    help_text = _subparsers(evaluate)["feature-norm"].format_help()
    assert "--images" in help_text and "--size" in help_text and "(default: 224)" in help_text
    compare_flags = {a.dest for a in _subparsers(evaluate)["compare"]._actions}
    assert {"feature_norm__images", "feature_norm__size"} <= compare_flags
    assert get_task("feature-norm").metric == "mean_norm"

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in real_photos[:2]:
        shutil.copy(p, photos / p.name)
    result_path = tmp_path / "result.json"
    assert main(["eval", "feature-norm", "--images", str(photos), "--size", "56", "--method", "none",
                 "--model", embedded_backbone.name, "--device", "cpu", "--quiet", "--out", str(result_path)]) == 0
    capsys.readouterr()
    result = json.loads(result_path.read_text())
    assert result["task"] == "feature-norm" and result["num_images"] == 2
    # independent of the task's code path: the backbone's own features of the same prepared images, in float64
    from wrcup.data.images import load_image
    from wrcup.data.prep import prepare_images

    expected = []
    with torch.no_grad():
        for p in sorted(photos.iterdir()):
            features = embedded_backbone(prepare_images(load_image(p), 14, 56).clamp(0, 1)[None]).double()
            expected.append(features.norm(dim=1).mean().item())
    assert result["mean_norm"] == pytest.approx(sum(expected) / 2, rel=1e-5)


def _write_two_class_split(root: Path, split: str, count: int, rng) -> None:
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for i in range(count):
        mask = np.zeros((28, 42), np.uint8)
        mask[:, 21:] = 1
        mask[0, 0] = 7  # a stored value outside the classes: ignored
        image = rng.integers(0, 60, (28, 42, 3), dtype=np.uint8) + (mask[..., None] == 1) * 180
        Image.fromarray(image.astype(np.uint8)).save(root / split / "images" / f"{i}.png")
        Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i}.png")


def test_example_dataset_is_a_choice_of_its_task_and_reads(example_dataset, tmp_path, embedded_backbone, capsys):
    seg_probe = _subparsers(_subparsers(build_parser())["eval"])["seg-probe"]
    dataset_flag = next(a for a in seg_probe._actions if a.dest == "dataset")
    assert "two-class-folders" in dataset_flag.choices
    assert get_task("seg-probe").options(dataset="two-class-folders", root="x").dataset == "two-class-folders"

    rng = np.random.default_rng(0)
    _write_two_class_split(tmp_path, "train", 2, rng)
    _write_two_class_split(tmp_path, "val", 1, rng)
    entry = get_dataset("segmentation", "two-class-folders")
    assert entry.splits == ("train", "val")
    sample = entry.open(tmp_path, split="val")[0]
    assert sample["label"][0, 0] == 255 and sample["label"][5, 5] == 0 and sample["label"][5, 30] == 1

    result_path = tmp_path / "result.json"
    assert main(["eval", "seg-probe", "--dataset", "two-class-folders", "--root", str(tmp_path), "--size", "28",
                 "--epochs", "1", "--method", "none", "--model", embedded_backbone.name, "--device", "cpu",
                 "--quiet", "--out", str(result_path)]) == 0
    capsys.readouterr()
    result = json.loads(result_path.read_text())
    assert (result["num_train_images"], result["num_val_images"]) == (2, 1)
    assert set(result["per_class_iou"]) == {"background", "object"}
