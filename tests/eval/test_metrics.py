"""wrcup.eval.metrics against hand-computed cases (worked out in the comments) and plain transcriptions.

The independent oracle for the DAVIS boundary measure is a direct numpy transcription of its definition with
scipy.ndimage.binary_dilation; the hand-made mask pair checks the boundary rule and the tolerance by hand.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wrcup.eval.metrics import (
    ConfusionMatrix,
    abs_rel,
    boundary_f_measure,
    boundary_map,
    boundary_scores,
    boundary_tolerance,
    box_iou,
    corloc,
    davis_scores,
    davis_sequence_scores,
    davis_summary,
    delta1,
    dilate,
    disk,
    pck,
    region_similarity,
    rmse,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def square(h, w, rows, cols):
    m = np.zeros((h, w), dtype=np.uint8)
    m[rows[0] : rows[1], cols[0] : cols[1]] = 1
    return m


# The hand-made pair used below (6×6 image):
#   GT   = ones in rows 1..3, cols 1..3 (a 3×3 block)
#   PRED = ones in rows 1..3, cols 3..5 (the block moved 2 columns right, touching the right image edge)
GT = square(6, 6, (1, 4), (1, 4))
PRED = square(6, 6, (1, 4), (3, 6))


# ------------------------------------------------------------------------------------------------ J
def test_region_similarity_hand_cases():
    # GT and PRED overlap in column 3, rows 1..3: 3 pixels; union 9 + 9 − 3 = 15 → J = 3/15 = 0.2
    assert region_similarity(PRED, GT) == pytest.approx(0.2, abs=1e-15)
    assert region_similarity(GT, GT) == 1.0
    empty = np.zeros((6, 6), dtype=np.uint8)
    assert region_similarity(empty, empty) == 1.0  # both empty → 1 (DAVIS convention)
    assert region_similarity(empty, GT) == 0.0
    # void: hiding column 3 removes the whole overlap (3 px) and 6 px of the union → J = 0 / 12
    void = np.zeros((6, 6), dtype=bool)
    void[:, 3] = True
    assert region_similarity(PRED, GT, void=void) == 0.0
    # batched input → per-frame values
    batch = region_similarity(np.stack([PRED, GT]), np.stack([GT, GT]))
    assert torch.allclose(batch, torch.tensor([0.2, 1.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ F
def test_boundary_map_hand_case():
    # A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour inside the
    # image. For GT (block rows 1..3, cols 1..3) this is the ring around rows 0..3 × cols 0..3:
    # row 0: cols 0..3 (col 0 via its lower-right neighbour (1,1), cols 1..3 via the pixel below);
    # rows 1, 2: col 0 (right neighbour is object) and col 3 (object pixel whose right neighbour is background);
    # row 3: cols 0..3 (col 0 via the right neighbour, cols 1..3 are object pixels above background). 12 pixels.
    expected_gt = np.zeros((6, 6), dtype=bool)
    expected_gt[0, 0:4] = expected_gt[3, 0:4] = True
    expected_gt[1:3, 0] = expected_gt[1:3, 3] = True
    assert np.array_equal(boundary_map(GT).numpy(), expected_gt)
    # For PRED (block rows 1..3, cols 3..5) the ring would be rows 0..3 × cols 2..5, but column 5 is the last
    # image column: there only the lower neighbour counts, so (1,5) and (2,5) (object above object) drop out;
    # (0,5) (background above object) and (3,5) (object above background) stay. 10 pixels.
    expected_pred = np.zeros((6, 6), dtype=bool)
    expected_pred[0, 2:6] = expected_pred[3, 2:6] = True
    expected_pred[1:3, 2] = True
    assert np.array_equal(boundary_map(PRED).numpy(), expected_pred)
    # the last row and the bottom-right pixel never see a lower neighbour
    full = np.ones((4, 4), dtype=np.uint8)
    assert not boundary_map(full).any()


def test_boundary_f_measure_hand_case():
    # 6×6 image: diagonal sqrt(72) = 8.49; 0.008 × 8.49 = 0.068 → tolerance ceil(0.068) = 1 pixel, i.e. a
    # match within the 4-neighbourhood (disk of radius 1 = the plus sign).
    assert boundary_tolerance((6, 6), 0.008) == 1
    # Precision: PRED's 10 boundary pixels vs GT's ring dilated by the plus sign.
    #   (0,2) (0,3) (3,2) (3,3) lie on GT's ring; (0,4) (3,4) touch (0,3)/(3,3); (1,2) touches (0,2);
    #   (2,2) touches (3,2). (0,5) and (3,5) are two columns from the ring → unmatched. P = 8/10.
    # Recall: GT's 12 boundary pixels vs PRED's boundary dilated.
    #   (0,2) (0,3) (3,2) (3,3) on it; (0,1) (3,1) touch (0,2)/(3,2); (1,3) (2,3) touch (1,2)/(2,2).
    #   (0,0) (1,0) (2,0) (3,0) are two columns away → unmatched. R = 8/12 = 2/3.
    # F = 2 · (4/5) · (2/3) / (4/5 + 2/3) = (16/15) / (22/15) = 8/11.
    f, p, r = boundary_scores(PRED, GT)
    assert float(p) == pytest.approx(0.8, abs=1e-15)
    assert float(r) == pytest.approx(2 / 3, abs=1e-15)
    assert float(f) == pytest.approx(8 / 11, abs=1e-15)
    assert boundary_f_measure(PRED, GT) == pytest.approx(8 / 11, abs=1e-15)
    # With a 2-pixel tolerance (bound_th >= 1 is a pixel count) the disk of radius 2 reaches 2 columns over:
    # (0,5), (3,5) now reach (0,3)/(3,3), and (0,0)…(3,0) reach (0,2)/(1,2)/(2,2)/(3,2) → P = R = F = 1.
    assert boundary_f_measure(PRED, GT, bound_th=2) == pytest.approx(1.0, abs=1e-15)
    assert boundary_f_measure(GT, GT) == 1.0


def test_boundary_f_measure_empty_conventions():
    empty = np.zeros((6, 6), dtype=np.uint8)
    # both boundaries empty → P = R = 1 → F = 1
    f, p, r = boundary_scores(empty, empty)
    assert (float(f), float(p), float(r)) == (1.0, 1.0, 1.0)
    # empty prediction, non-empty GT → P = 1, R = 0 → F = 0
    f, p, r = boundary_scores(empty, GT)
    assert (float(f), float(p), float(r)) == (0.0, 1.0, 0.0)
    # non-empty prediction, empty GT → P = 0, R = 1 → F = 0
    f, p, r = boundary_scores(GT, empty)
    assert (float(f), float(p), float(r)) == (0.0, 0.0, 1.0)


def test_boundary_tolerance_on_davis_frames():
    # 480p DAVIS frames: diagonal sqrt(480² + 854²) = 979.6; × 0.008 = 7.84 → 8 pixels
    assert boundary_tolerance((480, 854)) == 8
    with pytest.raises(ValueError, match="bound_th"):
        boundary_tolerance((480, 854), 2.5)


def test_disk_shape():
    # radius 2: offsets with dy² + dx² ≤ 4 → 13 cells (5×5 minus the 4 corners and the 8 cells with
    # one offset ±2 and the other ±1)
    d = disk(2).int().numpy()
    assert d.sum() == 13
    assert d[0].tolist() == [0, 0, 1, 0, 0] and d[2].tolist() == [1, 1, 1, 1, 1]


def _f_oracle(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """Direct transcription of the definition, numpy + scipy (shares no code with wrcup)."""
    from scipy import ndimage

    def bmap(m):
        m = m.astype(bool)
        h, w = m.shape
        b = np.zeros_like(m)
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (1, 0), (1, 1)):
                    yy, xx = y + dy, x + dx
                    if yy < h and xx < w and m[yy, xx] != m[y, x]:
                        b[y, x] = True
        return b

    h, w = gt.shape
    r = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(h, w)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    se = yy**2 + xx**2 <= r * r
    bp, bg = bmap(pred), bmap(gt)
    np_, ng = bp.sum(), bg.sum()
    if np_ == 0 and ng == 0:
        return 1.0
    if np_ == 0 or ng == 0:
        return 0.0
    prec = (bp & ndimage.binary_dilation(bg, se)).sum() / np_
    rec = (bg & ndimage.binary_dilation(bp, se)).sum() / ng
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def test_boundary_f_measure_matches_transcription_on_random_masks():
    pytest.importorskip("scipy", reason="scipy provides the dilation of the oracle")
    rng = np.random.default_rng(0)
    for trial in range(12):
        h, w = rng.integers(8, 40, size=2)
        # blobby masks: thresholded smoothed noise, so boundaries are long and partly matched
        base = rng.random((h, w))
        gt = base > 0.5
        pred = np.roll(gt, shift=(rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1)) ^ (rng.random((h, w)) > 0.9)
        th = [0.008, 0.05, 2, 3][trial % 4]
        assert boundary_f_measure(pred, gt, bound_th=th) == pytest.approx(_f_oracle(pred, gt, th), abs=1e-12)


def test_dilate_matches_scipy():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    masks = rng.random((3, 23, 31)) > 0.95
    masks[0, 0, :] = True  # touching the border
    for r in (1, 2, 4, 7):
        ref = np.stack([ndimage.binary_dilation(m, disk(r).numpy()) for m in masks])
        assert np.array_equal(dilate(torch.from_numpy(masks), r).numpy(), ref)


# ------------------------------------------------------------------------------------------- DAVIS scores
def test_davis_scores_hand_case_excludes_first_and_last_frame():
    # Sequence "a", 4 frames, one object (id 1) = GT in every frame. Scored frames: 1 and 2 only.
    #   frame 1: prediction = GT → J = 1, F = 1
    #   frame 2: prediction = PRED → J = 0.2, F = 8/11 (hand cases above)
    #   frames 0 and 3: empty predictions (J = F = 0) that must not count.
    # J = (1 + 0.2) / 2 = 0.6 → 60 %; F = (1 + 8/11) / 2 = 19/22 → 86.3636… %
    gt_a = np.stack([GT] * 4).astype(np.int64)
    pred_a = np.stack([np.zeros_like(GT), GT, PRED, np.zeros_like(GT)]).astype(np.int64)
    res = davis_scores({"a": pred_a}, {"a": gt_a})
    assert res["J-Mean"] == pytest.approx(60.0, abs=1e-10)
    assert res["F-Mean"] == pytest.approx(100 * 19 / 22, abs=1e-10)
    assert res["J&F-Mean"] == pytest.approx((60.0 + 100 * 19 / 22) / 2, abs=1e-10)
    # recall: share of frames above 0.5 → J: 1 of 2; F: 2 of 2 (8/11 > 0.5)
    assert res["J-Recall"] == pytest.approx(50.0) and res["F-Recall"] == pytest.approx(100.0)
    assert res["per_object"]["a_1"]["J"] == pytest.approx(60.0)
    # Including all 4 frames would give J = (0 + 1 + 0.2 + 0) / 4 = 30 %
    assert davis_scores({"a": pred_a}, {"a": gt_a}, exclude_first_last=False)["J-Mean"] == pytest.approx(30.0)


def test_davis_scores_means_over_objects_not_sequences():
    # Sequence "a" as above (1 object, J = 60 %). Sequence "b": 3 frames (only frame 1 scored), two objects:
    # object 1 predicted perfectly (J = 100), object 2 missed entirely (J = 0).
    # Mean over the 3 objects: (60 + 100 + 0) / 3 = 53.33 %; a mean over sequences would give (60 + 50) / 2 = 55.
    gt_a = np.stack([GT] * 4).astype(np.int64)
    pred_a = np.stack([np.zeros_like(GT), GT, PRED, np.zeros_like(GT)]).astype(np.int64)
    two = GT.astype(np.int64).copy()
    two[5, 0:2] = 2  # object 2: two pixels in the last row
    gt_b = np.stack([two] * 3)
    pred_b = np.stack([GT.astype(np.int64)] * 3)  # object 2 never predicted
    res = davis_scores({"a": pred_a, "b": pred_b}, {"a": gt_a, "b": gt_b})
    assert res["num_objects"] == 3
    assert res["J-Mean"] == pytest.approx((60 + 100 + 0) / 3, abs=1e-10)
    assert res["per_sequence"]["b"]["J"] == pytest.approx(50.0)
    # void label 255 in the ground truth is background: adding it changes neither the object count nor J
    gt_b_void = gt_b.copy()
    gt_b_void[:, 0, 5] = 255
    res_void = davis_scores({"b": pred_b}, {"b": gt_b_void})
    assert res_void["num_objects"] == 2 and res_void["J-Mean"] == pytest.approx(50.0)


def test_davis_scores_rejects_mismatch():
    gt = np.zeros((3, 6, 6), dtype=np.int64)
    gt[:, 2, 2] = 1
    with pytest.raises(ValueError, match="lack"):
        davis_scores({}, {"a": gt})
    with pytest.raises(ValueError, match="shape"):
        davis_scores({"a": gt[:2]}, {"a": gt})


def test_davis_sequence_scores_are_per_object_frame_means_and_summarise_to_davis_scores():
    """Per object: mean J and F over the scored frames and the shares above 0.5, from region_similarity and
    boundary_f_measure frame by frame; the summary of the rows is davis_scores, to the last bit."""
    rng = np.random.default_rng(4)
    gts, preds = {}, {}
    for name, objects in (("a", 2), ("b", 1), ("empty", 0)):
        gt = np.zeros((5, 30, 40), np.int64)
        for k in range(1, objects + 1):
            gt[:, 3 + 10 * k:10 + 10 * k, 5:25] = k
        pred = np.where(rng.random(gt.shape) < 0.15, rng.integers(0, objects + 1, gt.shape), gt)
        gts[name], preds[name] = gt, pred
    rows = {name: davis_sequence_scores(preds[name], gts[name], name=name) for name in gts}
    assert rows["a"].shape == (2, 4) and rows["empty"].shape == (0, 4) and rows["a"].dtype == np.float64
    for k in (1, 2):
        p, g = preds["a"][1:-1] == k, gts["a"][1:-1] == k
        j = np.array([region_similarity(p[t], g[t]) for t in range(3)])
        f = np.array([boundary_f_measure(p[t], g[t]) for t in range(3)])
        assert rows["a"][k - 1].tolist() == pytest.approx([j.mean(), f.mean(), (j > 0.5).mean(), (f > 0.5).mean()],
                                                          abs=1e-12)
    summary = davis_summary(rows)
    assert summary == davis_scores(preds, gts)
    assert summary["num_objects"] == 3 and list(summary["per_sequence"]) == ["a", "b"]
    with pytest.raises(ValueError, match="K×4"):
        davis_summary({"a": rows["a"][:, :3]})
    with pytest.raises(ValueError, match="no sequences"):
        davis_summary({})


def _bmap_shifted(m: np.ndarray) -> np.ndarray:
    """The boundary rule written the other way round: XOR with the east, south and south-east neighbours
    (zero beyond the image), then redo the last row with the east neighbour only, the last column with the
    south neighbour only, and clear the bottom-right pixel."""
    m = m.astype(bool)
    east, south, south_east = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    east[:, :-1], south[:-1, :], south_east[:-1, :-1] = m[:, 1:], m[1:, :], m[1:, 1:]
    b = (m ^ east) | (m ^ south) | (m ^ south_east)
    b[-1, :] = m[-1, :] ^ east[-1, :]
    b[:, -1] = m[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def _f_oracle_fast(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    from scipy import ndimage

    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    se = yy**2 + xx**2 <= radius * radius
    bp, bg = _bmap_shifted(pred), _bmap_shifted(gt)
    prec = (bp & ndimage.binary_dilation(bg, se)).sum() / bp.sum()
    rec = (bg & ndimage.binary_dilation(bp, se)).sum() / bg.sum()
    return 2 * prec * rec / (prec + rec)


def test_davis_scores_on_real_ground_truth():
    root = DATA / "davis2016-dev"
    if not root.is_dir():
        pytest.skip(f"real DAVIS data not found at {root}")
    pytest.importorskip("scipy", reason="scipy provides the dilation of the oracle")
    from wrcup.data import DavisDataset

    ds = DavisDataset(root, year="2016")
    masks = torch.stack([ds.load_mask(path) for path in ds.masks("dog")[:7]])
    perfect = davis_scores({"dog": masks}, {"dog": masks})
    assert perfect["J&F-Mean"] == pytest.approx(100.0)
    # predicting frame t − 3's mask for frame t: the dog runs, so the scores drop well below 100
    lagged = torch.cat([masks[:1].repeat(3, 1, 1), masks[:-3]])
    res = davis_scores({"dog": lagged}, {"dog": masks})
    assert 40.0 < res["J-Mean"] < 90.0 and 20.0 < res["F-Mean"] < 90.0
    # per frame, against the shifted-XOR transcription with scipy's dilation (480×854 → 8-pixel tolerance)
    frames = [3, 5]
    f_frames = boundary_f_measure(lagged[frames], masks[frames])
    oracle = [_f_oracle_fast(lagged[t].numpy(), masks[t].numpy(), 8) for t in frames]
    assert f_frames.tolist() == pytest.approx(oracle, abs=1e-12)
    assert res["per_object"]["dog_1"]["F"] == pytest.approx(100 * float(boundary_f_measure(lagged[1:-1], masks[1:-1]).mean()))
    # the boundary rule itself, on a real mask
    assert np.array_equal(boundary_map(masks[4]).numpy(), _bmap_shifted(masks[4].numpy()))


# ------------------------------------------------------------------------------------------ confusion matrix
def test_confusion_matrix_hand_case():
    # 3 classes, ignore 255. target / pred:
    #   [[0, 0, 1],     [[0, 1, 1],
    #    [1, 2, 255]]    [1, 1, 2]]
    # The ignored pixel drops out; (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,1).
    # Matrix (rows gt): [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    # IoU_0 = 1 / (2 + 1 − 1) = 1/2; IoU_1 = 2 / (2 + 4 − 2) = 1/2; IoU_2 = 0 / (1 + 0 − 0) = 0
    # mIoU = 1/3; pixel accuracy = 3/5; class accuracy = [1/2, 1, 0] → mean 1/2
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1, 1], [1, 1, 2]]), torch.tensor([[0, 0, 1], [1, 2, 255]]))
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert cm.iou().tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(0.6)
    assert cm.compute()["mean_class_accuracy"] == pytest.approx(0.5)
    # a 4th class absent from gt and pred has no IoU and is left out of the mean
    cm4 = ConfusionMatrix(4).update(np.array([[0, 1, 1], [1, 1, 2]]), np.array([[0, 0, 1], [1, 2, 255]]))
    assert math.isnan(cm4.iou()[3]) and cm4.miou() == pytest.approx(1 / 3)
    # accumulating the same batch twice doubles counts but leaves the ratios
    cm.update(torch.tensor([[0, 1, 1], [1, 1, 2]]), torch.tensor([[0, 0, 1], [1, 2, 255]]))
    assert cm.matrix.sum() == 10 and cm.miou() == pytest.approx(1 / 3)


def test_confusion_matrix_rejects_bad_labels():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target"):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="pred"):
        cm.update(torch.tensor([7]), torch.tensor([0]))
    with pytest.raises(TypeError):
        cm.update(torch.tensor([0.5]), torch.tensor([0]))
    # a bad prediction under an ignored pixel is fine
    cm.update(torch.tensor([7]), torch.tensor([255]))
    assert cm.matrix.sum() == 0


# ------------------------------------------------------------------------------------------- boxes, CorLoc
def test_box_iou_hand_cases():
    # a0 = [0,0,2,2], a1 = [0,0,4,4]; b0 = [1,1,3,3], b1 = [0,0,4,2], b2 = [10,10,11,11]
    # a0·b0: intersection [1,1,2,2] = 1, union 4 + 4 − 1 = 7 → 1/7
    # a0·b1: intersection [0,0,2,2] = 4, union 4 + 8 − 4 = 8 → 1/2
    # a1·b0: b0 lies inside a1: intersection 4, union 16 → 1/4
    # a1·b1: intersection 8, union 16 → 1/2;  anything · b2: disjoint → 0
    iou = box_iou([[0, 0, 2, 2], [0, 0, 4, 4]], [[1, 1, 3, 3], [0, 0, 4, 2], [10, 10, 11, 11]])
    expected = torch.tensor([[1 / 7, 0.5, 0.0], [0.25, 0.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(iou, expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="x1 < x0"):
        box_iou([[2, 0, 1, 1]], [[0, 0, 1, 1]])


def test_corloc_hand_case():
    # image 1: pred [0,0,4,4] vs gt [0,0,4,2] → IoU 1/2 ≥ 0.5 → correct (the threshold is inclusive)
    # image 2: pred [0,0,2,2] vs gts [1,1,3,3] (1/7), [10,10,12,12] (0) → miss
    # image 3: pred [5,5,7,7] vs gts [0,0,1,1] (0), [5,5,7,8] (4 / 6 = 2/3) → correct
    # CorLoc = 2/3
    preds = torch.tensor([[0, 0, 4, 4], [0, 0, 2, 2], [5, 5, 7, 7]], dtype=torch.float32)
    gts = [
        torch.tensor([[0, 0, 4, 2]]),
        torch.tensor([[1, 1, 3, 3], [10, 10, 12, 12]]),
        np.array([[0, 0, 1, 1], [5, 5, 7, 8]]),
    ]
    assert corloc(preds, gts) == pytest.approx(2 / 3)
    assert corloc(preds, gts, iou_threshold=0.6) == pytest.approx(1 / 3)  # only image 3 (2/3 ≥ 0.6)
    # no prediction, or no ground-truth box → a miss
    assert corloc([None, [0, 0, 2, 2]], [np.zeros((0, 4)), [[0, 0, 2, 2]]]) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------- PCK
def test_pck_hand_case():
    # pair 1: L = 20; points at distance 0 and 5 (3-4-5 triangle)
    #   α = 0.1 → radius 2 → 1 of 2 correct;  α = 0.25 → radius 5 → 2 of 2 (≤ is inclusive)
    # pair 2: L = 10; one point at distance 1
    #   α = 0.1 → radius 1 → 1 of 1;  α = 0.25 → 1 of 1
    # per image: α=0.1 → (1/2 + 1) / 2 = 0.75; α=0.25 → 1.  per point: α=0.1 → 2/3; α=0.25 → 1.
    preds = [np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[1.0, 0.0]])]
    gts = [np.zeros((2, 2)), np.zeros((1, 2))]
    out = pck(preds, gts, [20.0, 10.0], alphas=(0.1, 0.25))
    assert out[0.1] == pytest.approx(0.75) and out[0.25] == pytest.approx(1.0)
    pooled = pck(preds, gts, [20.0, 10.0], alphas=(0.1,), per_image=False)
    assert pooled[0.1] == pytest.approx(2 / 3)
    # masking out pair 1's second point: pair 1 → 1/1, so per image 1.0
    masked = pck(preds, gts, [20.0, 10.0], alphas=(0.1,), valid=[np.array([True, False]), np.array([True])])
    assert masked[0.1] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ depth
def test_depth_metrics_hand_case():
    # pred [1, 2, 4, 9], gt [1, 1, 5, 0]: the last pixel has no depth (gt 0) and is skipped.
    # errors 0, 1, −1 → RMSE = sqrt(2/3); AbsRel = (0 + 1/1 + 1/5) / 3 = 0.4
    # ratios max(p/g, g/p) = 1, 2, 1.25 → δ1 (strictly < 1.25) = 1/3
    pred = np.array([1.0, 2.0, 4.0, 9.0])
    gt = np.array([1.0, 1.0, 5.0, 0.0])
    assert rmse(pred, gt) == pytest.approx(math.sqrt(2 / 3), abs=1e-15)
    assert abs_rel(pred, gt) == pytest.approx(0.4, abs=1e-15)
    assert delta1(pred, gt) == pytest.approx(1 / 3, abs=1e-15)
    # an explicit valid mask removing pixel 1 → errors 0, −1: RMSE = sqrt(1/2), AbsRel = 0.1, δ1 = 1/2
    valid = np.array([True, False, True, True])
    assert rmse(pred, gt, valid) == pytest.approx(math.sqrt(0.5), abs=1e-15)
    assert abs_rel(pred, gt, valid) == pytest.approx(0.1, abs=1e-15)
    assert delta1(pred, gt, valid) == pytest.approx(0.5)
    # a non-positive prediction can never be within the ratio band
    assert delta1(np.array([-1.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no valid"):
        rmse(pred, np.zeros(4))
