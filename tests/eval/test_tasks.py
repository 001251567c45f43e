"""End-to-end tests of the evaluation task runners on tiny fixtures in the readers' layouts, with the embedded
backbone at tiny inputs (56-112 px → 4-8 patch grids)."""
from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wrcup.data import CAMVID_CLASSES
from wrcup.eval import tasks
from wrcup.eval.extract import FeatureExtractor
from wrcup.eval.metrics import box_iou
from wrcup.eval.tasks._common import subsample

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


# ----------------------------------------------------------------------------------------------- fixtures
def _two_region_image(rng, h, w, vertical_split: int):
    """Left part red-ish (label 0), right part blue-ish (label 1), with noise: an easy but real probe task."""
    img = np.zeros((h, w, 3), np.float32)
    img[:, :vertical_split] = (200, 40, 40)
    img[:, vertical_split:] = (40, 40, 200)
    img += rng.normal(0, 12, img.shape)
    label = np.zeros((h, w), np.uint8)
    label[:, vertical_split:] = 1
    return np.clip(img, 0, 255).astype(np.uint8), label


def _write(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


@pytest.fixture(scope="module")
def camvid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            image, label = _two_region_image(rng, 42, 56, 20 + 6 * i)
            label[0, 0] = 11  # void → ignored
            _write(root / split / f"f{i}.png", image, "RGB")
            _write(root / f"{split}annot" / f"f{i}.png", label, "L")
    return root


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    """Four sequences of 3 frames: a bright square (the object) on a dark noisy background."""
    root = tmp_path_factory.mktemp("davis")
    rng = np.random.default_rng(1)
    names = ["seq_a", "seq_b", "seq_c", "seq_d"]
    for s, seq in enumerate(names):
        for t in range(3):
            img = rng.normal(30, 10, (56, 84, 3))
            top, left = 8 + 2 * t, 10 + 12 * s
            img[top:top + 28, left:left + 28] = (230, 200, 60)
            mask = np.zeros((56, 84), np.uint8)
            mask[top:top + 28, left:left + 28] = 255
            _write(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", np.clip(img, 0, 255).astype(np.uint8), "RGB")
            _write(root / "Annotations" / "480p" / seq / f"{t:05d}.png", mask, "L")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    """Depth rising from top to bottom, brightness following it (a learnable monotone cue); some pixels missing."""
    root = tmp_path_factory.mktemp("nyu")
    rng = np.random.default_rng(2)
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            depth = np.tile(np.linspace(1.0, 4.0 + i, 42, dtype=np.float32)[:, None], (1, 56))
            grey = (255 * (depth - 1) / depth.max()).astype(np.float32)
            img = np.clip(np.stack([grey] * 3, -1) + rng.normal(0, 5, (42, 56, 3)), 0, 255).astype(np.uint8)
            depth[:3, :5] = 0.0
            _write(root / split / "rgb" / f"d{i}.png", img, "RGB")
            (root / split / "depth").mkdir(parents=True, exist_ok=True)
            np.save(root / split / "depth" / f"d{i}.npy", depth)
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, davis_root):
    """VOC2007 layout built from the DAVIS fixture's first frames (boxes written as 1-based VOC indices)."""
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    ids = []
    for seq in ("seq_a", "seq_b"):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "JPEGImages" / f"{seq}.jpg").write_bytes((davis_root / "JPEGImages/480p" / seq / "00000.jpg").read_bytes())
        left = 10 + 12 * ("seq_a", "seq_b").index(seq)
        ann = ET.Element("annotation")
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text, ET.SubElement(size, "height").text = "84", "56"
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = "thing"
        box = ET.SubElement(obj, "bndbox")
        for k, v in (("xmin", left + 1), ("ymin", 9), ("xmax", left + 28), ("ymax", 36)):
            ET.SubElement(box, k).text = str(v)
        (root / "Annotations").mkdir(exist_ok=True)
        ET.ElementTree(ann).write(root / "Annotations" / f"{seq}.xml")
        ids.append(seq)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def learned_parts(checkpoint, embedded_backbone):
    from wrcup.eval.extract import load_model

    _, upsampler, _ = load_model(str(checkpoint), "learned")
    return checkpoint, upsampler


def _extractor(backbone, method, upsampler=None, cache=None):
    return FeatureExtractor(backbone, upsampler if method == "learned" else None, method, cache_dir=cache)


# ------------------------------------------------------------------------------------------------ fidelity
def test_fidelity_per_folder_means_equal_runs_on_each_folder_alone(embedded_backbone, real_photos, tmp_path):
    """Images in two folders (as DAVIS sequences are): ``per_folder`` holds each folder's means, named below the
    common parent, and they equal the task run on that folder's images alone; the overall mean weighs images."""
    layout = {"seq-a/0.jpg": real_photos[0], "seq-a/1.jpg": real_photos[1], "deeper/seq-b/0.jpg": real_photos[2]}
    for name, src in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / name)
    extractor = FeatureExtractor(embedded_backbone, None, "bilinear")

    def fidelity(names):
        return tasks.run_task("fidelity", extractor, image_paths=[tmp_path / n for n in names], size=28,
                              progress=False)

    both = fidelity(list(layout))
    alone = {"seq-a": fidelity(["seq-a/0.jpg", "seq-a/1.jpg"]), "deeper/seq-b": fidelity(["deeper/seq-b/0.jpg"])}
    assert set(both["per_folder"]) == set(alone)
    for name, result in alone.items():
        assert "per_folder" not in result  # one folder: nothing to break down
        assert both["per_folder"][name]["num_images"] == result["num_images"]
        for key in ("cosine", "nmse", "norm_ratio"):
            assert both["per_folder"][name][key] == pytest.approx(result[key], rel=1e-6), (name, key)
    weighted = (2 * alone["seq-a"]["cosine"] + alone["deeper/seq-b"]["cosine"]) / 3
    assert both["cosine"] == pytest.approx(weighted, rel=1e-6)


# ----------------------------------------------------------------------------------------------- seg-probe
def test_seg_probe_learns_an_easy_split_and_repeats_exactly(embedded_backbone, camvid_root):
    # no cache: a cached run reads float16 features and differs from a fresh one in the last digits
    ex = _extractor(embedded_backbone, "bilinear")
    kw = dict(size=56, epochs=15, lr=5e-2, progress=False)
    a = tasks.seg_probe(ex, "camvid", camvid_root, **kw)
    assert a["num_train_images"] == 4 and a["num_val_images"] == 2 and a["num_classes"] == 11
    # red vs blue halves on a 4-cell-wide grid: only the cell column holding the boundary (≤ 1/4 of the
    # pixels) is ambiguous, chance is about 50 %
    assert a["pixel_accuracy"] > 75
    assert tuple(a["per_class_iou"]) == CAMVID_CLASSES
    assert a["per_class_iou"]["pole"] is None  # absent from ground truth and never predicted
    present = [v for v in a["per_class_iou"].values() if v is not None]
    assert math.isclose(a["mIoU"], sum(present) / len(present), rel_tol=1e-9)
    assert len(a["train_loss"]) == 15 and a["train_loss"][-1] < a["train_loss"][0]
    b = tasks.seg_probe(ex, "camvid", camvid_root, **kw)
    assert a == b
    json.dumps(a)


def test_seg_probe_max_images_subsamples_evenly(embedded_backbone, camvid_root):
    assert subsample(list(range(10)), 3) == [0, 3, 6]
    assert subsample(list(range(3)), 5) == [0, 1, 2]
    ex = _extractor(embedded_backbone, "none")
    r = tasks.seg_probe(ex, "camvid", camvid_root, size=56, epochs=1, max_images=1, progress=False)
    assert r["num_train_images"] == 1 and r["num_val_images"] == 1
    with pytest.raises(ValueError, match="dataset"):
        tasks.seg_probe(ex, "nope", camvid_root, progress=False)


def test_davis_fg_split_is_disjoint_and_checked():
    seqs = ["d", "a", "c", "b"]
    assert tasks.davis_fg_split(seqs) == (["a", "b", "c"], ["d"])
    assert tasks.davis_fg_split(seqs, ["b"], None) == (["b"], ["a", "c", "d"])
    with pytest.raises(ValueError, match="disjoint"):
        tasks.davis_fg_split(seqs, ["a", "b"], ["b"])
    with pytest.raises(ValueError, match="unknown"):
        tasks.davis_fg_split(seqs, ["zz"])
    with pytest.raises(ValueError, match="test_sequences is empty"):
        tasks.davis_fg_split(["a", "b"])


def test_seg_probe_davis_fg(embedded_backbone, davis_root):
    ex = _extractor(embedded_backbone, "none")
    r = tasks.seg_probe(ex, "davis-fg", davis_root, size=56, epochs=10, lr=5e-2, frame_step=1, progress=False)
    assert r["settings"]["train_sequences"] == ["seq_a", "seq_b", "seq_c"]
    assert r["settings"]["test_sequences"] == ["seq_d"]
    assert r["num_train_images"] == 9 and r["num_val_images"] == 3
    assert set(r["per_class_iou"]) == {"background", "foreground"}
    assert r["pixel_accuracy"] > 80  # a bright square on a dark background


# --------------------------------------------------------------------------------------------- depth-probe
def test_depth_probe(embedded_backbone, nyu_root, learned_parts):
    _, upsampler = learned_parts
    ex = _extractor(embedded_backbone, "learned", upsampler)
    r = tasks.depth_probe(ex, nyu_root, size=56, epochs=3, progress=False)
    assert r["num_train_images"] == 3 and r["num_val_images"] == 2
    assert r["rmse"] > 0 and math.isfinite(r["rmse"]) and r["abs_rel"] >= 0 and 0 <= r["delta1"] <= 100
    assert r == tasks.depth_probe(ex, nyu_root, size=56, epochs=3, progress=False)


# ----------------------------------------------------------------------------------------------- discovery
def test_last_block_keys_bias_removal_and_cache(embedded_backbone, tmp_path):
    ex = _extractor(embedded_backbone, "none", cache=tmp_path)
    image = torch.rand(3, 56, 56, generator=torch.Generator().manual_seed(0))
    raw = tasks.last_block_keys(ex, image, "img")
    assert raw.shape == (1, 384, 4, 4) and len(list(tmp_path.iterdir())) == 1
    bias = embedded_backbone.model.blocks[-1].attn.qkv.bias.float()[384:768]
    # the cached (float16) copy, bias removed, equals the fresh keys minus the k part of the qkv bias
    unbiased = tasks.last_block_keys(ex, image, "img", remove_bias=True)
    torch.testing.assert_close(unbiased, raw - bias.view(1, -1, 1, 1), atol=2e-2 * raw.abs().max().item(), rtol=0)


def test_feature_cache_is_keyed_on_weights_and_image_bytes(embedded_backbone, other_weights_backbone, real_photos,
                                                           tmp_path):
    """Other backbone weights never read the entries of these; a copied image keeps its key; features and
    keys of one image are separate entries."""
    from wrcup.eval.extract import file_key

    copy = tmp_path / "copy.jpg"
    copy.write_bytes(real_photos[0].read_bytes())
    key = file_key(real_photos[0])
    assert file_key(copy) == key and file_key(real_photos[1]) != key
    ex = _extractor(embedded_backbone, "none", cache=tmp_path)
    other = _extractor(other_weights_backbone, "none", cache=tmp_path)
    assert other_weights_backbone.weights_identity() != embedded_backbone.weights_identity()
    assert ex.cache_file(key, (56, 56)) != other.cache_file(key, (56, 56))
    assert ex.cache_file(key, (56, 56)) != ex.cache_file(key, (56, 56), kind="keys")
    assert ex.cache_file(key, (56, 56)) != ex.cache_file(key, (56, 70))
    image = torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    mine, theirs = ex.low_res(image, [key]), other.low_res(image, [key])  # both fill the same folder
    torch.testing.assert_close(ex.low_res(image, [key]), mine)  # read back from the cache
    assert not torch.allclose(mine, theirs)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-tensor"])
def test_corrupt_feature_and_key_cache_entries_are_recomputed(embedded_backbone, tmp_path, damage):
    """A damaged cache entry (a crash of another tool, a full disk, a bad copy) is removed with a warning and
    recomputed, never a traceback and never wrong features."""
    from safetensors.torch import save_file

    ex = _extractor(embedded_backbone, "none", cache=tmp_path)
    image = torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    fresh = ex.low_res(image, ["img"])
    keys = tasks.last_block_keys(ex, image[0], "img")
    for entry in (ex.cache_file("img", (56, 56)), ex.cache_file("img", (56, 56), kind="keys")):
        if damage == "truncated":
            entry.write_bytes(entry.read_bytes()[:100])
        elif damage == "garbage":
            entry.write_bytes(b"not a safetensors file")
        else:
            save_file({"something_else": torch.zeros(2)}, str(entry))
    with pytest.warns(UserWarning, match="unusable"):
        again = ex.low_res(image, ["img"])
    torch.testing.assert_close(again, fresh)
    with pytest.warns(UserWarning, match="unusable"):
        torch.testing.assert_close(tasks.last_block_keys(ex, image[0], "img"), keys, atol=2e-2 * keys.abs().max().item(), rtol=0)
    torch.testing.assert_close(ex.low_res(image, ["img"]), fresh)  # the rewritten entry reads back


@pytest.mark.parametrize("method", ["none", "bilinear", "learned"])
def test_discovery_davis_first_frames(embedded_backbone, davis_root, learned_parts, method):
    ex = _extractor(embedded_backbone, method, learned_parts[1])
    r = tasks.discovery(ex, "davis-first-frames", davis_root, size=112, progress=False)
    assert r["num_images"] == 4 and 0 <= r["corloc"] <= 100
    assert r["settings"]["tau"] == 0.2
    assert [p["name"] for p in r["per_image"]] == ["seq_a", "seq_b", "seq_c", "seq_d"]
    assert r["corloc"] == 100 * sum(p["hit"] for p in r["per_image"]) / 4
    for s, p in enumerate(r["per_image"]):
        gt = torch.tensor([[10 + 12 * s, 8, 38 + 12 * s, 36]], dtype=torch.float64)
        assert p["hit"] == bool(box_iou(torch.tensor(p["box"]), gt).max() >= 0.5)
    if method == "none":
        assert r["corloc"] == 100  # one bright square on a dark background
    assert r == tasks.discovery(ex, "davis-first-frames", davis_root, size=112, progress=False)


def test_discovery_voc(embedded_backbone, voc_root):
    r = tasks.discovery(_extractor(embedded_backbone, "none"), "voc07", voc_root, size=112, progress=False)
    assert r["num_images"] == 2 and r["corloc"] == 100
    with pytest.raises(ValueError, match="coco20k needs"):
        tasks.discovery(_extractor(embedded_backbone, "none"), "coco20k", voc_root, progress=False)


# ------------------------------------------------------------------------------------------ correspondence
def test_correspondence_identity_homography_is_exact(embedded_backbone, real_photos, tmp_path):
    """With max_shift 0 the target is the source; grid points 7 + 14k sit at cell centres, so every point
    must find its own cell (error 0.5·√2 px ≤ 0.01 · 112)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in real_photos[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    ex = _extractor(embedded_backbone, "none")
    r = tasks.correspondence(ex, "synthetic", folder, size=112, max_shift=0.0, grid_step=14, pairs_per_image=1,
                             progress=False)
    assert r["num_pairs"] == 2 and r["pck@0.01"] == 100 and r["pck@0.1"] == 100


@pytest.mark.parametrize("method", ["bilinear", "learned"])
def test_correspondence_synthetic_is_deterministic(embedded_backbone, real_photos, tmp_path, learned_parts, method):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in real_photos[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    ex = _extractor(embedded_backbone, method, learned_parts[1], cache=tmp_path / "cache")
    r = tasks.correspondence(ex, "synthetic", folder, size=56, pairs_per_image=2, progress=False)
    assert r["num_pairs"] == 4 and r["num_points"] > 0
    assert 0 <= r["pck@0.01"] <= r["pck@0.05"] <= r["pck@0.1"] <= 100
    # the pairs of one photo do not depend on the other photos
    one = tasks.correspondence(ex, "synthetic", folder, size=56, pairs_per_image=2, max_images=1, progress=False)
    assert r == tasks.correspondence(ex, "synthetic", folder, size=56, pairs_per_image=2, progress=False)
    assert one["num_pairs"] == 2


def test_correspondence_spair_layout(embedded_backbone, davis_root, tmp_path):
    """An SPair-layout pair of two DAVIS-fixture frames whose square moved 2 px down: corners map to corners."""
    root = tmp_path / "spair"
    (root / "JPEGImages" / "thing").mkdir(parents=True)
    for t in (0, 1):
        (root / "JPEGImages" / "thing" / f"{t}.jpg").write_bytes(
            (davis_root / "JPEGImages/480p/seq_a" / f"{t:05d}.jpg").read_bytes())
    (root / "PairAnnotation" / "test").mkdir(parents=True)
    ann = {"src_imname": "0.jpg", "trg_imname": "1.jpg", "category": "thing",
           "src_kps": [[12, 10], [36, 34]], "trg_kps": [[12, 12], [36, 36]],
           "src_bndbox": [10, 8, 38, 36], "trg_bndbox": [10, 10, 38, 38]}
    (root / "PairAnnotation" / "test" / "0-1:thing.json").write_text(json.dumps(ann))
    r = tasks.correspondence(_extractor(embedded_backbone, "none"), "spair", root, size=56, progress=False)
    assert r["num_pairs"] == 1 and r["num_points"] == 2
    assert 0 <= r["pck@0.01"] <= r["pck@0.05"] <= r["pck@0.1"] <= 100


def test_run_task_rejects_unknown_task(embedded_backbone):
    with pytest.raises(ValueError, match="task"):
        tasks.run_task("nope", _extractor(embedded_backbone, "none"))


# ------------------------------------------------------------------------------------------ real CamVid
def test_seg_probe_on_real_camvid(embedded_backbone):
    root = SHARED_DATA / "camvid"
    if not (root / "train").is_dir():
        pytest.skip(f"real CamVid not found at {root} (../shared/data is absent)")
    r = tasks.seg_probe(_extractor(embedded_backbone, "bilinear"), "camvid", root, size=112, epochs=1,
                        max_images=2, progress=False)
    assert r["num_train_images"] == 2 and r["num_val_images"] == 2
    assert 0 <= r["mIoU"] <= 100 and 0 <= r["pixel_accuracy"] <= 100
    assert len(r["per_class_iou"]) == 11
