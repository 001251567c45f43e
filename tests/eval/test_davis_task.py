"""The DAVIS task (wrcup.eval.tasks.davis) keeps every finished sequence's scores in the extractor's cache folder: a
killed run resumes at the first unfinished sequence with the same final scores, and the entries' key holds
everything the scores depend on."""
from __future__ import annotations

import copy
import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wrcup.eval import tasks
from wrcup.eval.extract import FeatureExtractor

davis_task = importlib.import_module("wrcup.eval.tasks.davis")  # the module (tasks.davis is its keyword runner)

SEQUENCES = ["seq_a", "seq_b", "seq_c"]


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    """Three sequences of 4 frames 56×84: a bright square (the object) moving on a dark noisy background."""
    root = tmp_path_factory.mktemp("davis")
    rng = np.random.default_rng(3)
    for s, seq in enumerate(SEQUENCES):
        for t in range(4):
            img = rng.normal(30, 10, (56, 84, 3))
            top, left = 8 + 3 * t, 10 + 12 * s + 2 * t
            img[top:top + 24, left:left + 24] = (230, 200, 60)
            mask = np.zeros((56, 84), np.uint8)
            mask[top:top + 24, left:left + 24] = 255
            for kind, array, mode, ext in (("JPEGImages", np.clip(img, 0, 255).astype(np.uint8), "RGB", "jpg"),
                                           ("Annotations", mask, "L", "png")):
                path = root / kind / "480p" / seq / f"{t:05d}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array, mode).save(path)
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("\n".join(SEQUENCES) + "\n")
    return root


@pytest.fixture(scope="module")
def upsampler():
    from wrcup.models.upsampler import build_upsampler

    torch.manual_seed(0)
    return build_upsampler("wrc-reference", 384, 14, residual=True).eval()


def _run(extractor, root, **options):
    return tasks.run_task("davis", extractor, root=root, size=56, progress=False, **options)


def _scores(result: dict) -> dict:
    """The result without what differs between an interrupted and an uninterrupted run."""
    return {k: v for k, v in result.items() if k not in ("seconds", "resumed_sequences")}


def test_killed_run_resumes_at_the_first_unfinished_sequence(embedded_backbone, upsampler, davis_root, tmp_path,
                                                             monkeypatch):
    extractor = FeatureExtractor(embedded_backbone, upsampler, "learned-4x", cache_dir=tmp_path / "a")
    propagated = []
    real_propagate, real_scores = davis_task.propagate_labels, davis_task.davis_sequence_scores

    def counting_propagate(frames, first, *args, **kwargs):
        propagated.append(first.shape)
        return real_propagate(frames, first, *args, **kwargs)

    def dying_scores(pred, gt, name="sequence", **kwargs):
        if name == "seq_b":  # killed while the second sequence is being scored
            raise KeyboardInterrupt
        return real_scores(pred, gt, name=name, **kwargs)

    monkeypatch.setattr(davis_task, "propagate_labels", counting_propagate)
    monkeypatch.setattr(davis_task, "davis_sequence_scores", dying_scores)
    with pytest.raises(KeyboardInterrupt):
        _run(extractor, davis_root)
    assert len(propagated) == 2
    monkeypatch.setattr(davis_task, "davis_sequence_scores", real_scores)
    propagated.clear()
    resumed = _run(extractor, davis_root)
    assert len(propagated) == 2 and resumed["resumed_sequences"] == 1  # seq_b and seq_c only

    # an uninterrupted run in a fresh cache folder gives exactly the same scores
    fresh = _run(FeatureExtractor(embedded_backbone, upsampler, "learned-4x", cache_dir=tmp_path / "b"), davis_root)
    assert fresh["resumed_sequences"] == 0 and len(propagated) == 5
    assert _scores(resumed) == _scores(fresh)
    assert list(resumed["per_sequence"]) == SEQUENCES and resumed["num_objects"] == 3
    # a third run reads every sequence back, still the same
    again = _run(extractor, davis_root)
    assert again["resumed_sequences"] == 3 and len(propagated) == 5 and _scores(again) == _scores(fresh)


def test_cached_scores_equal_scoring_the_predictions_directly(embedded_backbone, davis_root, tmp_path):
    """Oracle: the predictions propagated here from the extractor's features, scored by davis_scores."""
    from wrcup.data.davis import DavisDataset
    from wrcup.eval.extract import file_key, resize_to_grid
    from wrcup.eval.metrics import davis_scores
    from wrcup.eval.propagation import propagate_labels

    extractor = FeatureExtractor(embedded_backbone, None, "bilinear-4x", cache_dir=tmp_path)
    first, second = _run(extractor, davis_root), _run(extractor, davis_root)
    assert (first["resumed_sequences"], second["resumed_sequences"]) == (0, 3)
    data = DavisDataset(davis_root)
    preds, gts = {}, {}
    for seq in SEQUENCES:
        gts[seq] = data.load_masks(seq)
        feats = [extractor(resize_to_grid(data.load_frame(p), 56, 14)[None], keys=[file_key(p)])[0]
                 for p in data.frames(seq)]
        preds[seq] = torch.stack(list(propagate_labels(feats, gts[seq][0], tuple(gts[seq].shape[-2:]),
                                                        radius=48, progress=False)))
    expected = davis_scores(preds, gts)
    assert _scores(first) == _scores(second) == {**expected, "settings": first["settings"]}


def test_sequence_key_changes_with_everything_the_scores_depend_on(embedded_backbone, other_weights_backbone,
                                                                   upsampler, davis_root, tmp_path):
    options = davis_task.DavisOptions(root=str(davis_root))
    extractor = FeatureExtractor(embedded_backbone, upsampler, "learned-4x")
    frames, masks = ["f0", "f1"], ["m0", "m1"]

    def key(ex=extractor, opts=options, seq="seq_a", f=frames, m=masks):
        return davis_task.sequence_entry_key(ex, opts, seq, f, m)

    base = key()
    assert key(FeatureExtractor(embedded_backbone, copy.deepcopy(upsampler), "learned-4x")) == base  # same weights
    changed = copy.deepcopy(upsampler)
    with torch.no_grad():
        changed.head.bias[0] += 1e-3
    other_operator = copy.deepcopy(upsampler)
    other_operator.operator_name = "wrc-aligned"  # same state, other structure (repr)
    variants = {
        "radius": key(opts=dataclasses.replace(options, radius=10)),
        "topk": key(opts=dataclasses.replace(options, topk=3)),
        "n_last": key(opts=dataclasses.replace(options, n_last=3)),
        "temperature": key(opts=dataclasses.replace(options, temperature=0.07)),
        "size": key(opts=dataclasses.replace(options, size=224)),
        "year/split": key(opts=dataclasses.replace(options, split="train")),
        "sequence": key(seq="seq_b"),
        "frame bytes": key(f=["f0", "fX"]),
        "mask bytes": key(m=["m0", "mX"]),
        "upsampler weights": key(FeatureExtractor(embedded_backbone, changed, "learned-4x")),
        "upsampler structure": key(FeatureExtractor(embedded_backbone, other_operator, "learned-4x")),
        "method": key(FeatureExtractor(embedded_backbone, upsampler, "learned-bilinear-4x")),
        "backbone weights": key(FeatureExtractor(other_weights_backbone, upsampler, "learned-4x")),
    }
    assert all(v != base for v in variants.values()), [k for k, v in variants.items() if v == base]
    assert len(set(variants.values())) == len(variants)
    # a method without the upsampler does not depend on it
    assert (davis_task.sequence_entry_key(FeatureExtractor(embedded_backbone, None, "bilinear-4x"), options, "s", [], [])
            == davis_task.sequence_entry_key(FeatureExtractor(embedded_backbone, changed, "bilinear-4x"), options, "s",
                                             [], []))

    # end to end: a changed radius or model computes every sequence again, the same settings none
    cache = tmp_path / "cache"
    _run(FeatureExtractor(embedded_backbone, upsampler, "learned", cache_dir=cache), davis_root, sequences=["seq_a"])
    same = _run(FeatureExtractor(embedded_backbone, upsampler, "learned", cache_dir=cache), davis_root,
                sequences=["seq_a"])
    radius = _run(FeatureExtractor(embedded_backbone, upsampler, "learned", cache_dir=cache), davis_root,
                  sequences=["seq_a"], radius=6)
    model = _run(FeatureExtractor(embedded_backbone, changed, "learned", cache_dir=cache), davis_root,
                 sequences=["seq_a"])
    assert (same["resumed_sequences"], radius["resumed_sequences"], model["resumed_sequences"]) == (1, 0, 0)


def test_a_damaged_sequence_entry_is_recomputed(embedded_backbone, davis_root, tmp_path):
    extractor = FeatureExtractor(embedded_backbone, None, "none", cache_dir=tmp_path)
    first = _run(extractor, davis_root, sequences=["seq_a"])
    (entry,) = Path(tmp_path).glob("davis-sequence-*.safetensors")
    entry.write_bytes(entry.read_bytes()[:-5])
    with pytest.warns(UserWarning, match="unusable"):
        second = _run(extractor, davis_root, sequences=["seq_a"])
    assert second["resumed_sequences"] == 0 and _scores(second) == _scores(first)
