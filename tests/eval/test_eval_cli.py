"""``wrcup eval`` command line: single tasks and ``compare`` (JSON, Markdown, PNG; features shared by cache)."""
from __future__ import annotations

import json

import pytest

from wrcup.cli.main import main


@pytest.fixture
def photos(tmp_path, real_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in real_photos[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def test_single_task_writes_json(tmp_path, photos, checkpoint):
    out = tmp_path / "r.json"
    code = main(["eval", "correspondence", "--model", str(checkpoint), "--method", "learned", "--dataset",
                 "synthetic", "--root", str(photos), "--size", "56", "--pairs-per-image", "1", "--quiet",
                 "--out", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["task"] == "correspondence" and r["method"] == "learned" and r["operator"] == "wrc-reference"
    assert r["num_pairs"] == 2 and 0 <= r["pck@0.1"] <= 100


def test_missing_required_option_is_a_clear_error(capsys, photos):
    code = main(["eval", "correspondence", "--model", "dinov2-s14-imgfocus", "--method", "none", "--root", str(photos)])
    assert code == 2 and "--dataset" in capsys.readouterr().err


def test_compare_writes_json_markdown_chart_and_shares_features(tmp_path, photos, checkpoint):
    out, cache = tmp_path / "cmp" / "all.json", tmp_path / "cache"
    code = main(["eval", "compare", "--tasks", "fidelity,correspondence", "--methods", "none,bilinear,learned",
                 "--models", str(checkpoint), "dinov2-s14-imgfocus", "--size", "56", "--quiet",
                 "--fidelity-images", str(photos), "--correspondence-dataset", "synthetic",
                 "--correspondence-root", str(photos), "--correspondence-pairs-per-image", "1",
                 "--cache", str(cache), "--out", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["tasks"] == ["fidelity", "correspondence"] and len(r["runs"]) == 2 * 3 * 2
    skipped = [x for x in r["runs"] if "skipped" in x]
    assert len(skipped) == 2 and all(x["method"] == "learned" and x["model"] == "dinov2-s14-imgfocus" for x in skipped)
    for x in r["runs"]:
        if "result" in x:
            assert x["result"]["settings" if x["task"] == "correspondence" else "input_size"]
    # the same backbone features serve every method and both models (5 runs per task): per photo one entry
    # for the fidelity input, one for its 2× target, one for the correspondence source and one warped target
    assert len(list(cache.glob("*.safetensors"))) == 2 * 4
    # none and bilinear depend on the backbone only: computed for the first model, shared with the second
    shared = [x for x in r["runs"] if "shared_with" in x]
    assert len(shared) == 2 * 2 and all(x["model"] == "dinov2-s14-imgfocus" and x["shared_with"] == str(checkpoint)
                                        for x in shared)
    md = out.with_suffix(".md").read_text().splitlines()
    assert md[0].startswith("| model | method | fidelity cosine") and len(md) == 2 + 3
    assert [row.split("|")[1:3] for row in md[2:]] == [
        [" dinov2-s14-imgfocus ", " none "], [" dinov2-s14-imgfocus ", " bilinear "],
        [" tiny ", " learned (wrc-reference) "]]
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_resumes_from_its_parts(tmp_path, photos, checkpoint, monkeypatch):
    import wrcup.eval.compare as compare

    args = ["eval", "compare", "--tasks", "fidelity", "--methods", "bilinear,learned", "--models", str(checkpoint),
            "--size", "56", "--quiet", "--fidelity-images", str(photos), "--cache", str(tmp_path / "cache")]
    out = tmp_path / "first.json"
    assert main(args + ["--out", str(out)]) == 0
    parts = sorted(p.name for p in out.with_suffix(".parts").iterdir())
    assert len(parts) == 2 and parts[0].startswith("fidelity-bilinear-") and parts[1].startswith("fidelity-learned-")
    first = json.loads(out.read_text())

    def no_recompute(*a, **k):
        raise AssertionError("a finished result was recomputed")

    monkeypatch.setattr(compare, "run_task", no_recompute)
    assert main(args + ["--out", str(out)]) == 0  # everything comes from the parts
    assert json.loads(out.read_text())["runs"] == first["runs"]
    # other task options are another result: recomputed, not reused
    with pytest.raises(AssertionError, match="recomputed"):
        main(args + ["--fidelity-every", "2", "--out", str(out)])
    # a part cut short by a killed run is recomputed, not trusted
    monkeypatch.undo()
    part = out.with_suffix(".parts") / parts[1]
    part.write_text(part.read_text()[:50])
    assert main(args + ["--out", str(out)]) == 0
    assert json.loads(out.read_text())["runs"] == first["runs"]


def test_compare_rejects_unknown_task(tmp_path):
    assert main(["eval", "compare", "--tasks", "nope", "--out", str(tmp_path / "x.json")]) == 2


def test_bilinear_and_none_results_claim_no_operator(tmp_path, photos, checkpoint):
    # the checkpoint's operator is not used by --method bilinear/none, so the result must not name it
    for method in ("bilinear", "none"):
        out = tmp_path / f"{method}.json"
        assert main(["eval", "fidelity", str(photos), "--model", str(checkpoint), "--method", method, "--size", "56",
                     "--quiet", "--out", str(out)]) == 0
        r = json.loads(out.read_text())
        assert r["method"] == method and r["operator"] is None


def test_every_task_option_is_a_flag_of_eval_and_compare():
    """Flags come from the tasks' options dataclasses: each field is reachable, with its default and choices."""
    import argparse
    import dataclasses

    from wrcup.cli.main import build_parser
    from wrcup.eval.tasks import get_task, list_tasks
    from wrcup.eval.tasks._common import option_choices

    def subparsers(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices
        return {}

    evaluate = subparsers(build_parser())["eval"]
    for task in list_tasks():
        single = {a.dest: a for a in subparsers(evaluate)[task]._actions}
        compare = {a.dest: a for a in subparsers(evaluate)["compare"]._actions}
        for f in dataclasses.fields(get_task(task).options):
            name = f.metadata.get("flag") or f.name
            for action in (single[name], compare[f"{task.replace('-', '_')}__{name}"]):
                if f.default is not dataclasses.MISSING and not f.metadata.get("positional"):
                    assert action.default == f.default, (task, f.name)
                if f.metadata.get("choices"):  # a sequence, or a function of the registry (dataset readers)
                    assert tuple(action.choices) == option_choices(f), (task, f.name)
    davis = {a.dest: a.default for a in subparsers(evaluate)["davis"]._actions}
    assert (davis["n_last"], davis["topk"], davis["radius"]) == (7, 5, 12)
    assert {a.dest: a.default for a in subparsers(evaluate)["discovery"]._actions}["eps"] == 1e-5


def _tiny_davis(root):
    """Two sequences of 3 frames 56×84 (a bright moving square), DAVIS 2016 layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(5)
    for s, seq in enumerate(("sa", "sb")):
        for t in range(3):
            img = rng.normal(30, 10, (56, 84, 3))
            mask = np.zeros((56, 84), np.uint8)
            img[10 + 2 * t:34 + 2 * t, 10 + 20 * s:34 + 20 * s] = (230, 200, 60)
            mask[10 + 2 * t:34 + 2 * t, 10 + 20 * s:34 + 20 * s] = 255
            for kind, array, ext in (("JPEGImages", np.clip(img, 0, 255).astype(np.uint8), "jpg"),
                                     ("Annotations", mask, "png")):
                (root / kind / "480p" / seq).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / kind / "480p" / seq / f"{t:05d}.{ext}")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("sa\nsb\n")
    return root


def test_4x_methods_in_davis_and_compare(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "davis", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert all(m in help_text for m in ("bilinear-4x", "learned-4x", "learned-bilinear-4x"))

    root = _tiny_davis(tmp_path / "davis")
    out = tmp_path / "one.json"
    assert main(["eval", "davis", "--model", str(checkpoint), "--method", "learned-4x", "--root", str(root),
                 "--size", "56", "--quiet", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["method"] == "learned-4x" and r["operator"] == "wrc-reference" and r["num_objects"] == 2

    cache, out = tmp_path / "cache", tmp_path / "cmp.json"
    args = ["eval", "compare", "--tasks", "davis", "--methods", "bilinear,bilinear-4x,learned-4x,learned-bilinear-4x",
            "--models", str(checkpoint), "--size", "56", "--davis-root", str(root), "--quiet", "--cache", str(cache),
            "--parts", "none", "--out", str(out)]
    assert main(args) == 0
    md = out.with_suffix(".md").read_text().splitlines()
    assert [row.split("|")[1:3] for row in md[2:]] == [
        [" dinov2-s14-imgfocus ", " bilinear "], [" dinov2-s14-imgfocus ", " bilinear-4x "],
        [" tiny ", " learned-4x (wrc-reference) "], [" tiny ", " learned-bilinear-4x (wrc-reference) "]]
    first = json.loads(out.read_text())
    assert [x["result"]["resumed_sequences"] for x in first["runs"]] == [0, 0, 0, 0]
    assert len(list(cache.glob("davis-sequence-*.safetensors"))) == 2 * 4
    # without parts, a rerun still takes every finished sequence from the cache folder: same scores
    assert main(args) == 0
    again = json.loads(out.read_text())
    assert [x["result"]["resumed_sequences"] for x in again["runs"]] == [2, 2, 2, 2]
    assert ([x["result"]["J&F-Mean"] for x in again["runs"]] == [x["result"]["J&F-Mean"] for x in first["runs"]])
